//! The command line: clap definitions, help, dispatch, and the one place where errors
//! become a message and an exit status.

use std::io::Write;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;

use crate::cmd::{self, Ctx};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::metrics;
use crate::output;
use crate::sys::{netns, notify};

mod man;

#[derive(Parser, Debug)]
#[command(
    name = "kaprobe",
    version,
    about = "Check whether the peer of an established TCP connection is still there",
    long_about = "kaprobe sends the TCP keepalive probe itself, through a raw socket, on the \
connection's own 4-tuple (a pure ACK with sequence number SND.NXT-1, no payload), and reads the \
answer: ACK = alive, RST = reset (peer restarted), ICMP error = unreachable, silence after \
--probes tries = dead (peer gone, or a NAT/firewall dropped the idle flow).",
    after_help = TOP_AFTER_HELP,
    subcommand_help_heading = "Commands",
)]
pub struct Cli {
    /// More output: -v progress lines, -vv debug (RUST_LOG wins)
    #[arg(short, long, action = ArgAction::Count, global = true, help_heading = GLOBAL)]
    verbose: u8,
    /// Less output: -q errors only, -qq nothing on stderr
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose",
          help_heading = GLOBAL)]
    quiet: u8,
    /// Machine output: one JSON object per line
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// Enter a network namespace first: NAME from `ip netns`, or a PATH such as /proc/PID/ns/net
    #[arg(long, global = true, value_name = "NAME|PATH", help_heading = GLOBAL)]
    netns: Option<String>,
    /// Enter the network namespace of process PID first (as `nsenter -t PID -n`)
    #[arg(long, global = true, value_name = "PID", conflicts_with = "netns",
          value_parser = clap::value_parser!(u32).range(1..), help_heading = GLOBAL)]
    pid: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

/// The heading global options are listed under, in every subcommand's help.
const GLOBAL: &str = "Global options";

const TOP_AFTER_HELP: &str = "\
Exit status:
  0 alive (or done), 1 dead, 3 reset, 4 unreachable
  2 bad command line or bad input
  5 no such established connection
  6 missing privilege
  7 other failure
  130 interrupted by SIGINT/SIGTERM/SIGHUP (probe, sweep, nat-timeout)
  Each command's --help says which apply. A closed standard output ends
  any command quietly, by SIGPIPE, as it ends grep (a shell shows 141).

Examples:
  kaprobe probe 198.18.0.2:40000-198.51.100.2:9000
  kaprobe --json sweep --port 5432 --intvl 500ms";

/// `probe --help`'s opening: where a FLOW comes from, what it needs, what a reset does.
const PROBE_ABOUT: &str = "\
Run the time/intvl/probes loop on one connection, then print one verdict.

Find the FLOW with `kaprobe list` (or `ss -tn`): its Local and Remote columns, written \
LOCAL-REMOTE or as two arguments. Needs root, or CAP_NET_RAW and CAP_NET_ADMIN given to the \
binary with setcap (exit 6 names what is missing); reading the sequence numbers from the \
kernel (the default source) also needs CAP_BPF and CAP_PERFMON, else kaprobe falls back to \
--seq-source local.

A `reset` verdict also resets the local socket: the peer's RST reaches the local kernel \
too, and the application gets ECONNRESET, as from the kernel's own keepalive. \
`kaprobe man probe` has the whole page.";

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the time/intvl/probes loop on one connection, then print one verdict
    #[command(long_about = PROBE_ABOUT)]
    Probe(cmd::probe::ProbeArgs),
    /// The same loop on every matching established connection at once, one verdict each
    Sweep(cmd::sweep::SweepArgs),
    /// Keepalive for connections whose application never enabled it: probe whenever idle
    Watch(cmd::watch::WatchArgs),
    /// Find how long the path to HOST:PORT keeps an idle connection (NAT/firewall timeout)
    NatTimeout(cmd::nat_timeout::NatTimeoutArgs),
    /// Report keepalive probes and their ACKs seen on the wire, from any sender
    Sniff(cmd::sniff::SniffArgs),
    /// List established connections: idle time, owner, kernel keepalive timer
    List(cmd::list::ListArgs),
    /// Turn the kernel's own keepalive on for a running process's socket
    Enable(cmd::enable::EnableArgs),
    /// Show the host's keepalive sysctls and the dead-peer detection time they give
    Config(cmd::config::ConfigArgs),
    /// Print a shell completion script, generated from these definitions
    Completions(CompletionsArgs),
    /// Print a manual page (roff), generated from these definitions
    Man(ManArgs),
}

#[derive(Args, Debug)]
struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL")]
    shell: Shell,
}

// The possible values of SUBCOMMAND, every subcommand, are set in `command()` from the
// subcommands themselves.
#[derive(Args, Debug)]
struct ManArgs {
    /// The subcommand whose page to print (default: kaprobe's own page)
    #[arg(value_name = "SUBCOMMAND")]
    subcommand: Option<String>,
}

/// What `-v` and `-q` do for one subcommand, its exit status, and two examples.
struct Details {
    name: &'static str,
    verbose: &'static str,
    quiet: &'static str,
    after: &'static str,
}

const DETAILS: [Details; 10] = [
    Details {
        name: "probe",
        verbose: "More output: -v a line per learned sequence number and per probe on stderr (with --json: learned/probe events on stdout), -vv debug (RUST_LOG wins)",
        quiet: "Less output: -q errors only (no warnings), -qq nothing on stderr; the verdict is always printed",
        after: "\
Exit status:
  0 alive, 1 dead, 3 reset, 4 unreachable
  2 bad command line
  5 no such established connection, or it closed during the probe
  6 missing privilege
  7 other failure (e.g. a TCP-MD5 or TCP-AO connection)
  130 interrupted by SIGINT/SIGTERM/SIGHUP, after printing FLOW interrupted

Examples:
  kaprobe probe 198.18.0.2:40000-198.51.100.2:9000
  kaprobe probe --probes 5 198.18.0.2:40000 198.51.100.2:9000",
    },
    Details {
        name: "sweep",
        verbose: "More output: -v a line per learned sequence number and per probe of every connection on stderr (with --json: events on stdout), -vv debug",
        quiet: "Less output: -q errors only (no warnings), -qq nothing on stderr; verdicts and the summary are always printed",
        after: "\
Output:
  With --json, each verdict as soon as it is decided, then a summary.
  Otherwise a table sorted by verdict, at the end, then the summary.
  With --textfile PATH, the same verdicts as Prometheus metrics in PATH,
  also after an interruption.

Exit status:
  the worst verdict: 1 dead, else 4 unreachable, else 3 reset, else 0
  2 bad command line, or kaprobe cannot write in --textfile's directory
  5 nothing matches, or every connection closed
  6 missing privilege
  7 no verdict at all, and some connection failed
  130 interrupted by SIGINT/SIGTERM/SIGHUP, after the decided verdicts, the
      rest as interrupted, and the summary

Examples:
  kaprobe sweep --port 5432
  kaprobe --json sweep --port 22 | jq -c 'select(.verdict == \"dead\")'",
    },
    Details {
        name: "watch",
        verbose: "More output: -v a line when a connection is first watched, each round it stays alive, and per probe (with --json: events on stdout), -vv debug",
        quiet: "Less output: -q errors only (no warnings), -qq nothing on stderr; state changes and the summary are always printed",
        after: "\
Under systemd (Type=notify):
  READY=1 once the sockets are open and /metrics answers, WATCHDOG=1 at
  half of WatchdogSec, STOPPING=1 at the end; with stderr on the journal,
  log lines start with their priority (<3> to <7>)

Privileges, once the sockets are open and before probing:
  every capability is dropped but those still used (CAP_NET_ADMIN for
  filters, --on-dead kill and conntrack lookups; CAP_BPF and CAP_PERFMON
  for the kernel source), the ambient and bounding sets are emptied (the
  bounding set only with CAP_SETPCAP, which root has), no_new_privs is
  set, and with --user the process takes that user's uid and primary
  group. --on-dead exec commands run as that user (or as kaprobe's) with
  no capability

Exit status:
  with FLOW, when the connection ends: 1 dead (--on-dead kill),
      3 reset, 5 closed
  0 stopped by SIGINT/SIGTERM/SIGHUP, after a summary
  2 bad command line, --metrics' address is in use or not on this host,
      or --user names no user
  5 FLOW is not an established connection, or the --netns/--pid
      namespace is gone (checked every second; a summary comes first)
  6 missing privilege (a --metrics port below 1024 needs
      CAP_NET_BIND_SERVICE; --user needs CAP_SETUID and CAP_SETGID)
  7 other failure

Examples:
  kaprobe watch --on-dead kill 198.18.0.2:40000-198.51.100.2:9000
  kaprobe watch --port 5432 --on-dead 'exec logger \"$KAPROBE_FLOW dead\"'",
    },
    Details {
        name: "nat-timeout",
        verbose: "More output: -v a line per measured idle time and per probe, -vv debug",
        quiet: "Less output: -q no progress lines (rounds, connections still idling) and no warnings, -qq nothing on stderr; the result is always printed",
        after: "\
Exit status:
  0 the bracket was found, or no timeout up to --max
  2 bad command line, or HOST does not resolve
  6 missing privilege
  7 a test connection could not be opened, or another failure
  130 interrupted by SIGINT/SIGTERM/SIGHUP, after printing the bracket so far

Examples:
  kaprobe nat-timeout 198.51.100.2:22
  kaprobe nat-timeout --max 2h --resolution 5% localhost:9000",
    },
    Details {
        name: "sniff",
        verbose: "More output: -v says what is captured, -vv debug",
        quiet: "Less output: -q errors only (no warnings), -qq nothing on stderr; probes, answers and the summary are always printed",
        after: "\
Exit status:
  0 after the summary: --count or --duration reached, or SIGINT/SIGTERM/SIGHUP
  2 bad command line, or no such interface
  6 missing privilege (CAP_NET_RAW)
  7 other failure

Examples:
  kaprobe sniff -i eth0 --port 22
  kaprobe sniff --count 1 198.18.0.2:40000 198.51.100.2:9000",
    },
    Details {
        name: "list",
        verbose: "More output: -v says how many processes' descriptors could not be read, -vv debug",
        quiet: "Less output: -q errors only, -qq nothing on stderr",
        after: "\
Exit status:
  0 connections listed
  2 bad command line
  5 no established connection matches
  6 missing privilege
  7 other failure

Examples:
  kaprobe list --port 5432
  kaprobe --json list --remote 198.51.100.2 | jq -c '{flow, idle_ms}'",
    },
    Details {
        name: "enable",
        verbose: "More output: -vv says which process's descriptor was tried (debug)",
        quiet: "Less output: -q errors only, -qq nothing on stderr; the result is always printed",
        after: "\
Exit status:
  0 done: the timer is seen as set (or hidden behind a retransmit timer)
  2 bad values
  5 no such established connection
  6 borrowing the socket refused by the ptrace rules (CAP_SYS_PTRACE,
      Yama)
  7 no process holds the socket, or sock_diag does not show the state
      that was set

Examples:
  kaprobe enable --time 60s --intvl 10s 198.18.0.2:40000-198.51.100.2:5432
  kaprobe enable --off 198.18.0.2:40000 198.51.100.2:5432",
    },
    Details {
        name: "config",
        verbose: "No effect on config",
        quiet: "Less output: -qq no error message on stderr",
        after: "\
Exit status:
  0 printed
  2 bad command line, or no such --netns
  7 a sysctl could not be read

Examples:
  kaprobe config
  kaprobe --netns lab-a --json config",
    },
    Details {
        name: "completions",
        verbose: "No effect on completions",
        quiet: "No effect on completions",
        after: "\
Exit status:
  0 printed
  2 bad command line

Examples:
  kaprobe completions bash > /etc/bash_completion.d/kaprobe
  kaprobe completions fish > ~/.config/fish/completions/kaprobe.fish",
    },
    Details {
        name: "man",
        verbose: "No effect on man",
        quiet: "No effect on man",
        after: "\
Exit status:
  0 printed
  2 bad command line, e.g. an unknown SUBCOMMAND

Examples:
  kaprobe man > /usr/local/share/man/man1/kaprobe.1
  kaprobe man probe | man -l -",
    },
];

/// The whole command line: the derive definitions, with each subcommand's own words for
/// `-v`/`-q`, its exit status and examples. Help, completions and man pages all come
/// from this.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let global = |id: &'static str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .cloned()
            .unwrap_or_else(|| clap::Arg::new(id))
    };
    let (verbose, quiet) = (global("verbose"), global("quiet"));
    // Every subcommand has a page of its own (`kaprobe man probe`).
    let pages: Vec<String> = cmd
        .get_subcommands()
        .map(|sc| sc.get_name().to_string())
        .collect();
    cmd = cmd.mut_subcommand("man", |man| {
        man.mut_arg("subcommand", |a| {
            a.value_parser(clap::builder::PossibleValuesParser::new(pages))
        })
    });
    for d in &DETAILS {
        // A subcommand's own copy of a global option is kept when clap propagates the
        // global ones; its value still reaches the top-level field.
        cmd = cmd.mut_subcommand(d.name, |sc| {
            sc.arg(verbose.clone().help(d.verbose))
                .arg(quiet.clone().help(d.quiet))
                .after_help(d.after)
        });
    }
    cmd
}

fn init_logging(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (_, 1) => log::LevelFilter::Error,
        (_, q) if q >= 2 => log::LevelFilter::Off,
        (0, _) => log::LevelFilter::Warn,
        (1, _) => log::LevelFilter::Info,
        (2, _) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    // Lines never carry a timestamp of their own. When stderr is the journal, each starts
    // with its sd-daemon(3) priority, which the journal reads off (README "systemd").
    let journal = notify::journal_logging();
    b.format(move |f, record| {
        use std::io::Write;
        let prefix = if journal {
            notify::syslog_prefix(record.level())
        } else {
            ""
        };
        match record.level() {
            log::Level::Info => writeln!(f, "{prefix}kaprobe: {}", record.args()),
            l => writeln!(
                f,
                "{prefix}kaprobe: {}: {}",
                l.as_str().to_lowercase(),
                record.args()
            ),
        }
    });
    let _ = b.try_init();
}

/// Parses the command line and runs it; returns the exit status for `main` to end with.
pub fn main() -> ExitStatus {
    let matches = match command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return clap_error(e, json_in_argv(std::env::args_os())),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return clap_error(e, json_in_argv(std::env::args_os())),
    };
    init_logging(cli.verbose, cli.quiet);
    match run(&cli) {
        Ok(status) => status,
        Err(Error::OutputClosed) => ExitStatus::OutputClosed,
        Err(e) => {
            // -qq: nothing on stderr, the status says it. Nothing more can be done if stderr
            // is closed too.
            if cli.quiet < 2 {
                let _ = writeln!(std::io::stderr(), "kaprobe: {e}");
            }
            // With --json the error is also one object on stdout (README "JSON"), whatever
            // -q says: a script reads it instead of stderr. Nothing more can be done if
            // stdout is closed too.
            if cli.json {
                let _ = output::json_line(output::error_json(&e));
            }
            e.status()
        }
    }
}

/// Whether `--json` is among the arguments (before a `--` that ends the options): clap's own
/// errors come before the command line is understood, so this is how they know to print
/// their JSON object too. An option value that reads `--json` counts as well.
fn json_in_argv(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// clap's own message: help and version on stdout (exit 0), errors with their tip and
/// "try '--help'" on stderr (exit 2), and with `json` also as the JSON error object on
/// stdout.
fn clap_error(e: clap::Error, json: bool) -> ExitStatus {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => match output::print(&e.to_string()) {
            Ok(()) => ExitStatus::Success,
            Err(Error::OutputClosed) => ExitStatus::OutputClosed,
            Err(_) => ExitStatus::Failure,
        },
        _ => {
            let _ = e.print();
            if json {
                let _ = output::json_line(output::usage_error_json(&e.to_string()));
            }
            ExitStatus::Usage
        }
    }
}

fn run(cli: &Cli) -> Result<ExitStatus> {
    // `watch --metrics` listens where kaprobe was started, before --netns/--pid: a
    // DaemonSet's Prometheus finds /metrics on the host's network, and a port below 1024
    // is bound while the capability for it is held (scripts/deploy/README.md, "Prometheus"). No thread
    // starts here; watch serves once it has dropped its capabilities.
    let listener = match &cli.command {
        Command::Watch(args) if !args.metrics.is_empty() => Some(metrics::bind(
            &args.metrics,
            args.web_config_file.as_deref(),
        )?),
        _ => None,
    };
    netns::enter_from_args(cli.netns.as_deref(), cli.pid)?;
    let ctx = Ctx {
        json: cli.json,
        verbose: cli.verbose > 0,
        quiet: cli.quiet > 0,
        netns: netns::target_from_args(cli.netns.as_deref(), cli.pid)?,
    };
    match &cli.command {
        Command::Probe(args) => cmd::probe::run(args, &ctx),
        Command::Sweep(args) => cmd::sweep::run(args, &ctx),
        Command::Watch(args) => cmd::watch::run(args, &ctx, listener),
        Command::Sniff(args) => cmd::sniff::run(args, &ctx),
        Command::NatTimeout(args) => cmd::nat_timeout::run(args, &ctx),
        Command::List(args) => cmd::list::run(args, &ctx),
        Command::Enable(args) => cmd::enable::run(args, &ctx),
        Command::Config(args) => cmd::config::run(args, &ctx),
        Command::Completions(args) => completions(args.shell),
        Command::Man(args) => man(args.subcommand.as_deref()),
    }
}

fn completions(shell: Shell) -> Result<ExitStatus> {
    let mut cmd = command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kaprobe", &mut buf);
    output::print(&String::from_utf8_lossy(&buf))?;
    Ok(ExitStatus::Success)
}

fn man(subcommand: Option<&str>) -> Result<ExitStatus> {
    let mut cmd = command();
    // Built, a subcommand knows its full name (kaprobe-probe) and the global options.
    cmd.build();
    let page = match subcommand {
        None => cmd.clone(),
        Some(name) => cmd
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| Error::Usage(format!("no subcommand named '{name}'")))?,
    };
    let mut buf = Vec::new();
    man::render(&cmd, &page, &mut buf)
        .map_err(|e| Error::Runtime(format!("rendering the manual page: {e}")))?;
    output::print(&String::from_utf8_lossy(&buf))?;
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Timing;
    use std::time::Duration;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        let m = command().try_get_matches_from(args)?;
        Cli::from_arg_matches(&m)
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_details_and_a_page() {
        let cmd = command();
        let names: Vec<&str> = cmd
            .get_subcommands()
            .map(|s| s.get_name())
            .filter(|&n| n != "help")
            .collect();
        let man = cmd.find_subcommand("man").expect("man");
        let pages: Vec<String> = man
            .get_arguments()
            .find(|a| a.get_id() == "subcommand")
            .expect("man SUBCOMMAND")
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(pages, names);
        assert_eq!(DETAILS.map(|d| d.name), names[..]);
        for d in &DETAILS {
            assert!(d.after.contains("Exit status:\n"), "{}", d.name);
            let examples = d.after.split("Examples:\n").nth(1).expect(d.name);
            assert_eq!(examples.lines().count(), 2, "{}", d.name);
            assert!(
                examples.lines().all(|l| l.starts_with("  kaprobe ")),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let a = parse(&["kaprobe", "--json", "-v", "probe", "198.51.100.2:9000"]).unwrap();
        let b = parse(&["kaprobe", "probe", "198.51.100.2:9000", "--json", "-v"]).unwrap();
        assert!(a.json && b.json);
        assert_eq!(a.verbose, 1);
        assert_eq!(b.verbose, 1);
        let c = parse(&["kaprobe", "-qq", "list"]).unwrap();
        assert_eq!(c.quiet, 2);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            vec!["kaprobe", "probe", "--probes", "0", "198.51.100.2:9000"],
            vec!["kaprobe", "probe", "--probes", "256", "198.51.100.2:9000"],
            vec!["kaprobe", "probe", "--intvl", "soon", "198.51.100.2:9000"],
            vec![
                "kaprobe",
                "probe",
                "--time",
                "1000000h",
                "198.51.100.2:9000",
            ],
            vec!["kaprobe", "probe", "198.51.100.2:0"],
            vec!["kaprobe", "probe"],
            vec!["kaprobe", "watch", "--metrics", "9479"],
            vec!["kaprobe", "watch", "--metrics", "localhost:9479"],
            vec!["kaprobe", "watch", "--metrics", "127.0.0.1:65536"],
            vec!["kaprobe", "watch", "--metrics-per-connection"],
            vec!["kaprobe", "sweep", "--textfile"],
        ] {
            let e = parse(&args).expect_err(&args.join(" "));
            assert_eq!(e.exit_code(), 2, "{}", args.join(" "));
        }
    }

    #[test]
    fn json_is_seen_in_argv_before_the_end_of_options() {
        let argv = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(json_in_argv(argv(&["kaprobe", "probe", "--json", "x"])));
        assert!(json_in_argv(argv(&["kaprobe", "--json", "--prob", "3"])));
        assert!(!json_in_argv(argv(&["kaprobe", "probe", "x"])));
        assert!(!json_in_argv(argv(&["kaprobe", "probe", "--", "--json"])));
        assert!(!json_in_argv(argv(&["--json"])));
    }

    #[test]
    fn fleet_options_parse() {
        let cli = parse(&[
            "kaprobe",
            "watch",
            "--metrics",
            ":9479",
            "--metrics-per-connection",
        ])
        .unwrap();
        let Command::Watch(w) = cli.command else {
            panic!()
        };
        assert_eq!(
            w.metrics,
            vec![metrics::parse_listen_addr("[::]:9479").unwrap()]
        );
        assert!(w.metrics_per_connection);
        let cli = parse(&["kaprobe", "watch", "--port", "22"]).unwrap();
        let Command::Watch(w) = cli.command else {
            panic!()
        };
        assert!(w.metrics.is_empty());
        let cli = parse(&["kaprobe", "sweep", "--textfile", "/tmp/k.prom"]).unwrap();
        let Command::Sweep(s) = cli.command else {
            panic!()
        };
        assert_eq!(
            s.textfile.as_deref(),
            Some(std::path::Path::new("/tmp/k.prom"))
        );
    }

    #[test]
    fn defaults_follow_the_spec() {
        let cli = parse(&["kaprobe", "probe", "198.51.100.2:9000"]).unwrap();
        let Command::Probe(p) = cli.command else {
            panic!()
        };
        assert_eq!(
            p.timing.timing(),
            Timing {
                time: Duration::ZERO,
                intvl: Duration::from_secs(1),
                probes: 3
            }
        );
        assert_eq!(p.style.seq_source, None);
    }
}
