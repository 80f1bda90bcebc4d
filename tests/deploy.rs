//! scripts/deploy/: the systemd unit template, the Kubernetes DaemonSet manifest and the
//! Debian package, each really checked: `systemd-analyze verify` and `security` on the unit,
//! a YAML parse of the manifest, and the package built by build-deb.sh, installed with
//! `dpkg -i` (root only; it installs into this machine, then removes itself).
//!
//! A missing tool (systemd-analyze, cargo-deb, dpkg) skips a test, or fails it when
//! KAPROBE_REQUIRE_NETNS=1, as in CI, which installs them (.ci/run).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(file: &str) -> PathBuf {
    repo().join("scripts/deploy").join(file)
}

/// True when `reason` is None; otherwise the test is skipped (`common::skip`; a failure
/// under KAPROBE_REQUIRE_NETNS=1).
fn require(reason: Option<String>) -> bool {
    match reason {
        None => true,
        Some(why) => common::skip(why),
    }
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ------------------------------------------------------------------ systemd unit

/// The `Key=value` lines of the unit, in order.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn unit_template_says_what_kaprobe_needs() {
    let unit = std::fs::read_to_string(deploy("kaprobe-watch@.service")).unwrap();
    let settings = unit_settings(&unit);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("WatchdogSec").len(), 1);
    assert_eq!(get("EnvironmentFile"), ["/etc/kaprobe/%i.conf"]);
    assert_eq!(
        get("ExecStart"),
        ["/usr/bin/kaprobe watch $KAPROBE_ARGS --on-dead ${KAPROBE_ON_DEAD}"]
    );
    assert_eq!(get("Environment"), ["KAPROBE_ON_DEAD=report"]);
    assert_eq!(get("LimitNOFILE"), ["65536"]);
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let mut caps: Vec<&str> = get(key).iter().flat_map(|v| v.split_whitespace()).collect();
        caps.sort_unstable();
        assert_eq!(caps, ["CAP_NET_ADMIN", "CAP_NET_RAW"], "{key}");
    }
    assert_eq!(get("NoNewPrivileges"), ["yes"]);
    assert_eq!(
        get("User"),
        Vec::<&str>::new(),
        "no fixed user: DynamicUser"
    );
    assert_eq!(get("DynamicUser"), ["yes"]);

    // The example configuration's arguments are the ones the unit passes on.
    let example = std::fs::read_to_string(deploy("kaprobe-watch.conf.example")).unwrap();
    let args: Vec<&str> = example
        .lines()
        .filter_map(|l| l.strip_prefix("KAPROBE_ARGS="))
        .collect();
    assert_eq!(args.len(), 1, "one KAPROBE_ARGS line:\n{example}");
    // The unit adds --on-dead itself: no documented KAPROBE_ARGS may carry one (clap refuses
    // the option twice).
    let readme = std::fs::read_to_string(deploy("README.md")).unwrap();
    for doc in [&example, &readme] {
        for (_, rest) in doc
            .match_indices("KAPROBE_ARGS=")
            .map(|(i, _)| doc.split_at(i + 13))
        {
            let value = rest.split(['\'', '`', '\n']).next().unwrap_or("");
            assert!(
                !value.contains("--on-dead"),
                "--on-dead in KAPROBE_ARGS={value}"
            );
        }
    }
    // The command for --on-dead, commented out: one single-quoted value, which systemd's
    // EnvironmentFile parser takes literally, quotes inside included.
    let on_dead: Vec<&str> = example
        .lines()
        .filter_map(|l| l.strip_prefix("#KAPROBE_ON_DEAD='")?.strip_suffix('\''))
        .collect();
    assert_eq!(
        on_dead.len(),
        1,
        "one #KAPROBE_ON_DEAD='...' line:\n{example}"
    );
    assert!(
        on_dead[0].contains('"'),
        "the example shows a quoted argument"
    );
    // ExecStart: `$KAPROBE_ARGS` split at spaces, `${KAPROBE_ON_DEAD}` one word, as systemd
    // expands them; both the default and the example parse.
    for value in ["report", on_dead[0]] {
        let mut argv = vec!["watch".to_string()];
        argv.extend(args[0].split_whitespace().map(String::from));
        argv.extend(["--on-dead".to_string(), value.to_string()]);
        let watch = parse_args(&argv);
        assert!(
            watch
                .get_one::<kaprobe::metrics::ListenAddr>("metrics")
                .is_some()
        );
        assert_eq!(
            watch.get_one::<String>("on_dead").map(String::as_str),
            Some(value)
        );
    }
}

fn unit_template_passes_systemd_analyze() {
    let missing = (!runs("systemd-analyze", &["--version"]))
        .then(|| "systemd-analyze is not installed (Debian package `systemd`)".to_string());
    if !require(missing) {
        return;
    }
    let dir = common::ScratchDir::new("unit");
    let unit = std::fs::read_to_string(deploy("kaprobe-watch@.service")).unwrap();
    // An instance of the template, running the binary under test (verify checks that
    // ExecStart is executable). `--man=no`: the man page exists once the package is in.
    let instance = dir.0.join("kaprobe-watch@ci.service");
    std::fs::write(
        &instance,
        unit.replace("/usr/bin/kaprobe", env!("CARGO_BIN_EXE_kaprobe")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&instance)
        .output()
        .expect("run systemd-analyze verify");
    // Unknown keys and bad values are only warnings: none is allowed.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );

    // The hardening holds: exposure at most 3.0 of 10 ("OK"); it is 2.4 today.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=30"])
        .arg(&instance)
        .output()
        .expect("run systemd-analyze security");
    assert!(
        out.status.success(),
        "systemd-analyze security: {}",
        text(&out)
    );

    // And verify can fail: a misspelt key is reported.
    std::fs::write(
        &instance,
        std::fs::read_to_string(&instance)
            .unwrap()
            .replace("ProtectHome=", "ProtectHomme="),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&instance)
        .output()
        .unwrap();
    assert!(
        !out.stderr.is_empty(),
        "a bad key went unnoticed: {}",
        text(&out)
    );
}

// ------------------------------------------------------------------ DaemonSet

fn key<'a>(y: &'a Yaml, k: &str) -> &'a Yaml {
    &y[k]
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Every (path, value) of a YAML tree whose key is `name`.
fn find_keys<'a>(y: &'a Yaml, name: &str, path: String, found: &mut Vec<(String, &'a Yaml)>) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                let ks = k.as_str().unwrap_or("?");
                let p = format!("{path}.{ks}");
                if ks == name {
                    found.push((p.clone(), v));
                }
                find_keys(v, name, p, found);
            }
        }
        Yaml::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                find_keys(v, name, format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn daemonset_parses_and_grants_only_what_watch_and_its_user_switch_need() {
    let text = std::fs::read_to_string(deploy("kaprobe-daemonset.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("kaprobe-daemonset.yaml is not YAML");
    let ds: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("DaemonSet"))
        .collect();
    assert_eq!(ds.len(), 1, "one DaemonSet");
    let ds = ds[0];
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    assert_eq!(spec["hostPID"].as_bool(), Some(true));
    // The selector selects the pods it makes.
    let selector = &ds["spec"]["selector"]["matchLabels"];
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_hash().expect("matchLabels") {
        assert_eq!(&labels[k.as_str().unwrap()], v, "selector label {k:?}");
    }

    let containers = spec["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = key(c, "securityContext");
    let mut add = strings(&sc["capabilities"]["add"]);
    add.sort();
    // The two kaprobe uses, and the three `--user` needs to switch away from uid 0.
    assert_eq!(add, ["NET_ADMIN", "NET_RAW", "SETGID", "SETPCAP", "SETUID"]);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_ne!(sc["privileged"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));

    // Nowhere else a capability or a privileged container.
    for doc in &docs {
        let mut caps = Vec::new();
        find_keys(doc, "capabilities", String::new(), &mut caps);
        for (path, v) in &caps {
            assert!(
                std::ptr::eq(*v, &sc["capabilities"]),
                "capabilities at {path} too"
            );
        }
        let mut privileged = Vec::new();
        find_keys(doc, "privileged", String::new(), &mut privileged);
        for (path, v) in privileged {
            assert_ne!(v.as_bool(), Some(true), "privileged at {path}");
        }
    }

    // The metrics port: served by `watch --metrics`, declared, probed for readiness.
    let args = strings(&c["args"]);
    assert_eq!(args.first().map(String::as_str), Some("watch"), "{args:?}");
    let metrics = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics="))
        .expect("watch --metrics=ADDR:PORT in args");
    let port: i64 = metrics
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in --metrics");
    let ports = c["ports"].as_vec().expect("ports");
    let declared = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .expect("a port named metrics");
    assert_eq!(declared["containerPort"].as_i64(), Some(port));
    let ready = &c["readinessProbe"]["httpGet"];
    assert_eq!(ready["path"].as_str(), Some("/metrics"));
    assert!(
        ready["port"].as_str() == Some("metrics") || ready["port"].as_i64() == Some(port),
        "readiness probe on the metrics port"
    );
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );

    // Root only until the sockets are open: then the unprivileged --user.
    assert_eq!(sc["runAsUser"].as_i64(), Some(0));
    assert!(
        args.iter().any(|a| a == "--user=65534"),
        "watch switches to an unprivileged user: {args:?}"
    );
    assert!(
        text.contains("Why not runAsNonRoot"),
        "the manifest says why it starts as root"
    );

    // The args are what kaprobe's own parser accepts, and --metrics is the port declared.
    let watch = parse_args(&args);
    assert_eq!(
        watch
            .get_one::<kaprobe::metrics::ListenAddr>("metrics")
            .map(|a| a.addr),
        Some(format!("[::]:{port}").parse().unwrap()),
        "{args:?}"
    );
}

/// `kaprobe ARGS...` through kaprobe's own command-line parser; the `watch` subcommand's
/// matches. A bad option or value fails the test with clap's message.
fn parse_args(args: &[String]) -> clap::ArgMatches {
    let argv = std::iter::once("kaprobe".to_string()).chain(args.iter().cloned());
    let m = kaprobe::cli::command()
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("kaprobe {}: {e}", args.join(" ")));
    m.subcommand_matches("watch")
        .unwrap_or_else(|| panic!("not a watch: {args:?}"))
        .clone()
}

// ------------------------------------------------------------------ Debian package

const BIN: &str = "/usr/bin/kaprobe";

/// Runs dpkg (or a dpkg tool), waiting while another dpkg/apt holds its lock.
fn dpkg(program: &str, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new(program)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let locked = !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("lock");
        if !locked || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// dpkg's status of the kaprobe package: "" when dpkg has never heard of it,
/// "install ok installed", "deinstall ok config-files" (removed, not purged), ...
fn status() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "kaprobe"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn installed() -> bool {
    status().ends_with(" installed")
}

/// dpkg still has a record of it (installed, or removed but not purged).
fn known() -> bool {
    let s = status();
    !s.is_empty() && !s.ends_with("not-installed")
}

fn getcap() -> String {
    let out = Command::new("getcap")
        .arg(BIN)
        .output()
        .expect("run getcap");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn has_caps(getcap: &str) -> bool {
    // libcap 2.66 prints `/usr/bin/kaprobe cap_net_admin,cap_net_raw=ep`; older ones
    // `/usr/bin/kaprobe = cap_net_admin,cap_net_raw+ep`.
    getcap.contains("cap_net_admin")
        && getcap.contains("cap_net_raw")
        && (getcap.ends_with("=ep") || getcap.ends_with("+ep"))
}

/// Removes the package and any statoverride this test added, also when it fails.
struct Installed {
    override_added: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.override_added {
            let _ = dpkg("dpkg-statoverride", &["--remove", BIN]);
        }
        if known() {
            let out = dpkg("dpkg", &["--purge", "kaprobe"]);
            if !out.status.success() {
                eprintln!("dpkg --purge kaprobe failed: {}", text(&out));
            }
        }
    }
}

fn run_postinst() -> Output {
    Command::new("/var/lib/dpkg/info/kaprobe.postinst")
        .arg("configure")
        .output()
        .expect("run kaprobe.postinst")
}

fn deb_installs_and_grants_the_capabilities() {
    let reason = if !is_root() {
        Some("not root: installing a package needs root".to_string())
    } else if !runs("dpkg", &["--version"]) {
        Some("dpkg is missing".into())
    } else if !runs("cargo", &["deb", "--version"]) {
        Some("cargo-deb is not installed (cargo install cargo-deb --locked)".into())
    } else if !runs("getcap", &["-v"]) && !Path::new("/usr/sbin/getcap").exists() {
        Some("getcap is missing (Debian package libcap2-bin)".into())
    } else if installed() {
        Some("a kaprobe package is already installed here; not touching it".into())
    } else {
        None
    };
    if !require(reason) {
        return;
    }

    let dir = common::ScratchDir::new("deb");
    let out = Command::new(deploy("build-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_kaprobe"), "--output"])
        .arg(&dir.0)
        .output()
        .expect("run build-deb.sh");
    assert!(out.status.success(), "build-deb.sh: {}", text(&out));
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).is_file(),
        "no .deb: {}",
        text(&out)
    );

    let mut guard = Installed {
        override_added: false,
    };
    let out = dpkg("dpkg", &["-i", &deb]);
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    assert!(installed());
    let caps = getcap();
    assert!(has_caps(&caps), "getcap after install: {caps:?}");
    assert!(Path::new("/lib/systemd/system/kaprobe-watch@.service").is_file());
    assert!(Path::new("/usr/share/doc/kaprobe/examples/kaprobe-watch.conf.example").is_file());
    // What the binary generates ships too: the man pages and the shell completions.
    for file in [
        "/usr/share/man/man1/kaprobe.1.gz",
        "/usr/share/man/man1/kaprobe-probe.1.gz",
        "/usr/share/man/man1/kaprobe-watch.1.gz",
        "/usr/share/bash-completion/completions/kaprobe",
        "/usr/share/zsh/vendor-completions/_kaprobe",
        "/usr/share/fish/vendor_completions.d/kaprobe.fish",
    ] {
        assert!(Path::new(file).is_file(), "{file} is not installed");
    }
    let version = Command::new(BIN)
        .arg("--version")
        .output()
        .expect("run kaprobe");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("kaprobe "),
        "{}",
        text(&version)
    );

    // A dpkg-statoverride is the administrator's choice: postinst then grants nothing.
    let out = Command::new("setcap").args(["-r", BIN]).output().unwrap();
    assert!(out.status.success(), "setcap -r: {}", text(&out));
    let out = dpkg("dpkg-statoverride", &["--add", "root", "root", "0755", BIN]);
    assert!(
        out.status.success(),
        "dpkg-statoverride --add: {}",
        text(&out)
    );
    guard.override_added = true;
    let out = run_postinst();
    assert!(out.status.success(), "postinst: {}", text(&out));
    assert!(
        !has_caps(&getcap()),
        "capabilities despite the statoverride: {}",
        getcap()
    );
    let out = dpkg("dpkg-statoverride", &["--remove", BIN]);
    assert!(
        out.status.success(),
        "dpkg-statoverride --remove: {}",
        text(&out)
    );
    guard.override_added = false;
    let out = run_postinst();
    assert!(out.status.success(), "postinst: {}", text(&out));
    assert!(has_caps(&getcap()), "postinst again: {}", getcap());

    let out = dpkg("dpkg", &["-r", "kaprobe"]);
    assert!(out.status.success(), "dpkg -r: {}", text(&out));
    assert!(!Path::new(BIN).exists(), "{BIN} left after dpkg -r");
    assert!(!Path::new("/lib/systemd/system/kaprobe-watch@.service").exists());
    assert_eq!(status(), "deinstall ok config-files");
    drop(guard);
    assert!(
        !known(),
        "dpkg still knows kaprobe after --purge: {}",
        status()
    );
}

crate::tests!(
    unit_template_says_what_kaprobe_needs,
    unit_template_passes_systemd_analyze,
    daemonset_parses_and_grants_only_what_watch_and_its_user_switch_need,
    deb_installs_and_grants_the_capabilities,
);
