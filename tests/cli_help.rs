//! The command line as a user meets it, without a lab: help texts, clap's error help, the
//! bounds on every duration and count, completions, man pages, and what happens when
//! standard output goes away or fills up.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{describe, run_bounded, run_kaprobe_bare};

const SUBCOMMANDS: [&str; 10] = [
    "probe",
    "sweep",
    "watch",
    "nat-timeout",
    "sniff",
    "list",
    "enable",
    "config",
    "completions",
    "man",
];

fn kaprobe() -> &'static str {
    env!("CARGO_BIN_EXE_kaprobe")
}

/// Runs `script` with bash, `$K` naming the kaprobe binary.
fn bash(script: &str) -> (i32, String, String) {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script]).env("K", kaprobe());
    let (code, out, err, _) = run_bounded(cmd, &format!("bash -c '{script}'"));
    (code, out, err)
}

fn each_subcommand_help_ends_with_its_exit_status_and_two_examples() {
    for sub in SUBCOMMANDS {
        for flag in ["-h", "--help"] {
            let (code, out, err, _) = run_kaprobe_bare(&[sub, flag]);
            assert_eq!(code, 0, "{sub} {flag}: {}", describe(code, &out, &err));
            let exit = out
                .find("\nExit status:\n")
                .unwrap_or_else(|| panic!("{sub} {flag}: no exit status\n{out}"));
            let examples = out
                .find("\nExamples:\n")
                .unwrap_or_else(|| panic!("{sub} {flag}: no examples\n{out}"));
            assert!(exit < examples, "{sub}: exit status, then examples\n{out}");
            let tail: Vec<&str> = out[examples..].trim().lines().skip(1).collect();
            assert_eq!(tail.len(), 2, "{sub} {flag}: two examples, last\n{out}");
            for l in tail {
                assert!(l.starts_with("  kaprobe "), "{sub}: {l}");
            }
            assert!(out[exit..].contains(" 2 "), "{sub}: usage status\n{out}");
        }
    }
    let (code, out, _, _) = run_kaprobe_bare(&["--help"]);
    assert_eq!(code, 0);
    for needle in ["Exit status:", "130 interrupted", "141", "Examples:"] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
}

fn global_options_are_listed_under_their_own_heading() {
    for sub in SUBCOMMANDS {
        let (_, out, _, _) = run_kaprobe_bare(&[sub, "--help"]);
        let (own, global) = out
            .split_once("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{sub}: no global heading\n{out}"));
        for opt in ["--verbose", "--quiet", "--json", "--netns"] {
            assert!(
                !own.contains(opt),
                "{sub}: {opt} among its own options\n{out}"
            );
            assert!(global.contains(opt), "{sub}: {opt} not global\n{out}");
        }
    }
}

fn verbose_and_quiet_say_what_they_do_for_each_subcommand() {
    let help_of = |sub: &str, opt: &str| {
        let (_, out, _, _) = run_kaprobe_bare(&[sub, "--help"]);
        // The option's line and the next: the help is on one or the other.
        let at = out.find(opt).unwrap_or_else(|| panic!("{sub}: {opt}"));
        out[at..].lines().take(2).collect::<Vec<_>>().join(" ")
    };
    let verbose: Vec<String> = SUBCOMMANDS
        .iter()
        .map(|s| help_of(s, "--verbose"))
        .collect();
    assert!(verbose[0].contains("per probe"), "probe: {}", verbose[0]);
    assert!(verbose[5].contains("descriptors"), "list: {}", verbose[5]);
    assert!(verbose[7].contains("No effect"), "config: {}", verbose[7]);
    assert!(help_of("probe", "--quiet").contains("verdict is always printed"));
    assert!(help_of("sweep", "--quiet").contains("summary"));
}

fn clap_errors_keep_their_tips_and_point_to_help() {
    let (code, out, err, _) = run_kaprobe_bare(&["probe", "--prob", "3", "198.51.100.2:9000"]);
    assert_eq!(code, 2, "{}", describe(code, &out, &err));
    assert!(err.contains("unexpected argument '--prob'"), "{err}");
    assert!(
        err.contains("tip: a similar argument exists: '--probes'"),
        "{err}"
    );
    assert!(err.contains("try '--help'"), "{err}");
    assert!(out.is_empty(), "{out}");

    let (code, _, err, _) = run_kaprobe_bare(&["prob", "198.51.100.2:9000"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("similar subcommand exists: 'probe'"), "{err}");

    let (code, _, err, _) = run_kaprobe_bare(&["probe", "198.18.0.2:40000-198.51.100.2"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no port") && err.contains("try '--help'"),
        "{err}"
    );
}

fn every_duration_and_count_is_bounded_when_parsed() {
    let flow = "198.18.0.2:40000-198.51.100.2:9000";
    for (args, needle) in [
        (
            vec!["probe", "--time", "1000000h", flow],
            "above the limit of 9h6m7s",
        ),
        (vec!["probe", "--intvl", "32768s", flow], "above the limit"),
        (
            vec!["probe", "--intvl", "99999999999999999999999s", flow],
            "not a duration",
        ),
        (vec!["probe", "--probes", "256", flow], "256"),
        (vec!["sweep", "--time", "10h"], "above the limit"),
        (vec!["sweep", "--rate", "10000001"], "10000001"),
        (vec!["watch", "--time", "1000000h", flow], "above the limit"),
        (vec!["watch", "--rescan", "2h"], "above the limit of 1h"),
        (
            vec!["watch", "--rescan", "10ms"],
            "below the minimum of 100ms",
        ),
        (vec!["watch", "--rate", "0"], "0"),
        (
            vec!["nat-timeout", "--max", "8d", "198.51.100.2:22"],
            "above the limit of 7d",
        ),
        (
            vec!["nat-timeout", "--min", "10ms", "198.51.100.2:22"],
            "below the minimum",
        ),
        (
            vec!["nat-timeout", "--parallel", "257", "198.51.100.2:22"],
            "257",
        ),
        (
            vec!["nat-timeout", "--resolution", "0%", "198.51.100.2:22"],
            "more than 0% and less than 100%",
        ),
        (vec!["nat-timeout", "198.51.100.2"], "no port"),
        (vec!["sniff", "--count", "1000001"], "1000001"),
        (vec!["sniff", "--duration", "31d"], "above the limit of 30d"),
        (vec!["sniff", "--max-connections", "0"], "0"),
        (vec!["enable", "--time", "32768s", flow], "32767"),
        (vec!["enable", "--probes", "128", flow], "TCP_KEEPCNT"),
    ] {
        let start = Instant::now();
        let (code, out, err, _) = run_kaprobe_bare(&args);
        assert_eq!(code, 2, "{args:?}: {}", describe(code, &out, &err));
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.contains("try '--help'"), "{args:?}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{args:?} waited instead of refusing"
        );
    }
}

fn the_largest_values_are_accepted_and_nothing_overflows() {
    // Parsed, then the connection is looked up (and not found): no panic, no wait.
    let (code, out, err, _) = run_kaprobe_bare(&[
        "probe",
        "--time",
        "32767s",
        "--intvl",
        "32767s",
        "--probes",
        "255",
        "198.18.0.2:40000-198.51.100.2:9000",
    ]);
    assert!(
        code == 5 || code == 6,
        "parsed and looked up: {}",
        describe(code, &out, &err)
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn verbose_says_why_kaprobe_may_wait_for_the_rate_limit() {
    let local = ["--seq-source", "local"];
    let (_, _, err, _) = run_kaprobe_bare(&["-v", "probe", "198.51.100.2:9", local[0], local[1]]);
    assert!(err.contains("tcp_invalid_ratelimit"), "{err}");
    assert!(err.contains("waits 600ms"), "{err}");
    let (_, _, err, _) = run_kaprobe_bare(&["probe", "198.51.100.2:9", local[0], local[1]]);
    assert!(!err.contains("tcp_invalid_ratelimit"), "only at -v: {err}");
}

fn bash_completion_parses_and_every_shell_is_offered() {
    let (code, script, err, _) = run_kaprobe_bare(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "{sub} not completed");
    }
    let path = std::env::temp_dir().join(format!("kaprobe-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The script defines its function when sourced.
    let (code, out, err) = bash("source <(\"$K\" completions bash) && complete -p kaprobe");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kaprobe"), "{out}");

    let (code, zsh, _, _) = run_kaprobe_bare(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef kaprobe"), "{zsh}");
    let (code, fish, _, _) = run_kaprobe_bare(&["completions", "fish"]);
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c kaprobe"), "{fish}");
    let (code, _, err, _) = run_kaprobe_bare(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("possible values") && err.contains("bash"),
        "{err}"
    );
}

/// Renders a page the way `man -l` does, returning (text, warnings).
fn man_l(page: &str) -> (String, String) {
    let mut child = Command::new("man")
        .args(["--warnings", "-l", "-"])
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man (man-db) is needed for this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "man -l failed");
    (
        plain(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Text without the overstrike (`N\x08N`) that man uses for bold on a pipe.
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

fn man_pages_render_without_warnings() {
    for sub in std::iter::once("").chain(SUBCOMMANDS) {
        let args: Vec<&str> = ["man", sub].into_iter().filter(|a| !a.is_empty()).collect();
        let (code, page, err, _) = run_kaprobe_bare(&args);
        assert_eq!(code, 0, "man {sub}: {err}");
        assert!(
            page.starts_with(".") || page.contains(".TH"),
            "roff: {page}"
        );
        let (text, warnings) = man_l(&page);
        assert!(warnings.trim().is_empty(), "man {sub}: {warnings}");
        let name = if sub.is_empty() {
            "kaprobe".to_string()
        } else {
            format!("kaprobe-{sub}")
        };
        assert!(text.contains(&name), "man {sub}: title\n{text}");
        for section in ["NAME", "SYNOPSIS", "EXIT STATUS", "EXAMPLES"] {
            assert!(text.contains(section), "man {sub}: {section}\n{text}");
        }
        let groff = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(page.as_bytes())?;
                c.wait_with_output()
            })
            .expect("groff");
        assert!(
            groff.stderr.is_empty(),
            "groff -ww {sub}: {}",
            String::from_utf8_lossy(&groff.stderr)
        );
    }
    let (text, _) = man_l(&run_kaprobe_bare(&["man"]).1);
    assert!(
        text.contains("GLOBAL OPTIONS") && text.contains("kaprobe-probe(1)"),
        "{text}"
    );
    let (code, _, err, _) = run_kaprobe_bare(&["man", "nosuch"]);
    assert_eq!(code, 2, "{err}");
}

/// The long options and short flags a help screen lists (`  -v, --verbose`, `      --time <DUR>`).
fn options_in_help(help: &str) -> Vec<String> {
    let mut opts = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') || line.len() - t.len() < 2 {
            continue;
        }
        for word in t.split([' ', ',']) {
            let word = word.trim_end_matches('.');
            let long = word.starts_with("--") && word.len() > 2;
            let short = word.len() == 2 && word.starts_with('-');
            if long || short {
                opts.push(word.to_string());
            } else if !word.is_empty() && !word.starts_with('-') {
                break;
            }
        }
    }
    opts
}

/// Every page has the sections of ss(8) and more, a dated `.TH` with the version, a synopsis
/// with value names, and every option its `--help` lists; it points only to pages that exist.
fn man_pages_are_complete_and_cannot_lose_an_option() {
    let (_, version, _, _) = run_kaprobe_bare(&["--version"]);
    let version = version.trim().trim_start_matches("kaprobe ").to_string();
    for sub in std::iter::once("").chain(SUBCOMMANDS) {
        let args: Vec<&str> = ["man", sub].into_iter().filter(|a| !a.is_empty()).collect();
        let (_, page, _, _) = run_kaprobe_bare(&args);
        let th = page
            .lines()
            .find(|l| l.starts_with(".TH "))
            .unwrap_or_else(|| panic!("man {sub}: no .TH"));
        assert!(
            th.contains(&format!("kaprobe {version}")),
            "man {sub}: {th}"
        );
        let date = th
            .split_whitespace()
            .nth(3)
            .unwrap_or_default()
            .trim_matches('"');
        assert!(
            date.len() == 10 && date.chars().filter(|&c| c == '-').count() == 2,
            "man {sub}: date in {th}"
        );
        let (text, _) = man_l(&page);
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "OUTPUT",
            "EXIT STATUS",
            "EXAMPLES",
            "PRIVILEGES",
            "SIDE EFFECTS",
            "SEE ALSO",
        ] {
            assert!(
                text.lines().any(|l| l == section),
                "man {sub}: no {section} section\n{text}"
            );
        }
        // A section: the lines after its heading, up to the next heading (column 0).
        let section_of = |name: &str| -> String {
            text.lines()
                .skip_while(|l| *l != name)
                .skip(1)
                .take_while(|l| l.is_empty() || l.starts_with(' '))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let name_line = section_of("NAME");
        let description = section_of("DESCRIPTION");
        assert!(
            description.split_whitespace().count() > 2 * name_line.split_whitespace().count(),
            "man {sub}: DESCRIPTION repeats NAME\n{description}"
        );
        let see_also = section_of("SEE ALSO")
            .split_whitespace()
            .collect::<String>();
        for other in ["ss(8)", "tcp(7)", "hping3(8)", "tcpdump(1)"] {
            assert!(see_also.contains(other), "man {sub}: SEE ALSO {other}");
        }
        for other in SUBCOMMANDS.iter().filter(|&&o| o != sub) {
            assert!(
                see_also.contains(&format!("kaprobe-{other}(1)")),
                "man {sub}: SEE ALSO kaprobe-{other}(1)"
            );
        }
        // Every page referred to exists: `kaprobe man X` makes kaprobe-X(1).
        for word in text.split(|c: char| c.is_whitespace() || c == ',') {
            if let Some(name) = word
                .strip_prefix("kaprobe-")
                .and_then(|w| w.strip_suffix("(1)"))
                .filter(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            {
                let (code, _, err, _) = run_kaprobe_bare(&["man", name]);
                assert_eq!(code, 0, "man {sub} names kaprobe-{name}(1): {err}");
            }
        }
        assert!(!text.contains("kaprobe-help"), "man {sub}: kaprobe-help");
        // Every option --help lists is on the page, and the synopsis names its value.
        let help_args: Vec<&str> = [sub, "--help"]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let (_, help, _, _) = run_kaprobe_bare(&help_args);
        let options = options_in_help(&help);
        assert!(
            options.contains(&"--json".to_string()),
            "{sub}: {options:?}"
        );
        let options_section = section_of("OPTIONS") + &section_of("GLOBAL OPTIONS");
        for opt in &options {
            assert!(
                options_section.contains(opt.as_str()),
                "man {sub}: option {opt} missing from the page\n{options_section}"
            );
        }
    }
    let (_, page, _, _) = run_kaprobe_bare(&["man", "probe"]);
    let (text, _) = man_l(&page);
    for value in ["--time DUR", "--intvl DUR", "--probes N", "FLOW"] {
        let synopsis: String = text
            .split("SYNOPSIS")
            .nth(1)
            .and_then(|s| s.split("DESCRIPTION").next())
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            synopsis.contains(value),
            "synopsis lacks {value}: {synopsis}"
        );
    }
    let (code, _, _, _) = run_kaprobe_bare(&["man", "help"]);
    assert_eq!(code, 2, "kaprobe man help has no page");
}

/// `probe --help` says where a FLOW comes from, what privilege it needs and what a reset does.
fn probe_help_says_how_to_find_a_flow_and_what_a_reset_does() {
    let (_, help, _, _) = run_kaprobe_bare(&["probe", "--help"]);
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "kaprobe list",
        "root",
        "CAP_NET_RAW",
        "also resets the local socket",
    ] {
        assert!(
            flat.contains(needle),
            "probe --help lacks {needle:?}\n{help}"
        );
    }
}

/// `{ sleep; kaprobe ...; } | true`: the reader is gone before kaprobe writes.
fn closed_reader(args: &str) -> (i32, String) {
    let (code, out, err) = bash(&format!(
        "{{ sleep 0.3; \"$K\" {args}; }} | true; echo \"${{PIPESTATUS[0]}}\""
    ));
    assert_eq!(code, 0, "{err}");
    (out.trim().parse().unwrap_or(-1), err)
}

fn a_closed_stdout_ends_quietly_as_it_ends_grep() {
    let (grep, _) = {
        let (code, out, err) =
            bash("{ sleep 0.3; seq 3 | grep 1; } | true; echo \"${PIPESTATUS[0]}\"");
        assert_eq!(code, 0, "{err}");
        (out.trim().parse::<i32>().unwrap(), err)
    };
    assert_eq!(grep, 141, "grep dies of SIGPIPE");
    for args in [
        "config",
        "--json config",
        "--help",
        "probe --help",
        "man",
        "completions bash",
    ] {
        let (status, err) = closed_reader(args);
        assert_eq!(status, grep, "kaprobe {args}: as grep");
        assert!(err.is_empty(), "kaprobe {args}: quiet, got: {err}");
    }
    // The issue's own forms: whatever the timing, no message and no abort.
    for args in [
        "config | head -c1",
        "--json config | head -1",
        "man | head -1",
    ] {
        let (code, out, err) = bash(&format!(
            "\"$K\" {args} >/dev/null; echo \"${{PIPESTATUS[0]}}\""
        ));
        assert_eq!(code, 0);
        let status: i32 = out.trim().parse().unwrap();
        assert!(status == 0 || status == 141, "{args}: {status}");
        assert!(err.is_empty(), "{args}: {err}");
    }
}

fn a_full_disk_is_a_failure_with_its_reason() {
    let (code, out, err) = bash("\"$K\" config > /dev/full");
    assert_eq!(code, 7, "{}", describe(code, &out, &err));
    assert_eq!(
        err.trim(),
        "kaprobe: writing to standard output: No space left on device (os error 28)"
    );
}

fn qq_leaves_stderr_empty_and_the_status_speaks() {
    let (code, out, err, _) = run_kaprobe_bare(&["-qq", "--netns", "kp-no-such-ns", "config"]);
    assert_ne!(code, 0, "{}", describe(code, &out, &err));
    assert!(err.is_empty(), "{err}");
    let (code2, _, err, _) = run_kaprobe_bare(&["--netns", "kp-no-such-ns", "config"]);
    assert_eq!(code, code2);
    assert_eq!(err.lines().count(), 1, "{err}");
}

crate::tests!(
    each_subcommand_help_ends_with_its_exit_status_and_two_examples,
    global_options_are_listed_under_their_own_heading,
    verbose_and_quiet_say_what_they_do_for_each_subcommand,
    clap_errors_keep_their_tips_and_point_to_help,
    every_duration_and_count_is_bounded_when_parsed,
    the_largest_values_are_accepted_and_nothing_overflows,
    verbose_says_why_kaprobe_may_wait_for_the_rate_limit,
    bash_completion_parses_and_every_shell_is_offered,
    man_pages_render_without_warnings,
    man_pages_are_complete_and_cannot_lose_an_option,
    probe_help_says_how_to_find_a_flow_and_what_a_reset_does,
    a_closed_stdout_ends_quietly_as_it_ends_grep,
    a_full_disk_is_a_failure_with_its_reason,
    qq_leaves_stderr_empty_and_the_status_speaks,
);
