//! The command line: clap definitions, validation, dispatch, and the one place where errors
//! become a message and an exit status.

use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::cmd::{self, Ctx};
use crate::engine::Timing;
use crate::error::{EXIT_USAGE, Result};
use crate::sys::netns;

#[derive(Parser, Debug)]
#[command(
    name = "kaprobe",
    version,
    about = "Check whether the peer of an established TCP connection is still there",
    long_about = "kaprobe sends the TCP keepalive probe itself, through a raw socket, on the \
connection's own 4-tuple (a pure ACK with sequence number SND.NXT-1, no payload), and reads the \
answer: ACK = alive, RST = reset (peer restarted), ICMP error = unreachable, silence after \
--probes tries = dead (peer gone, or a NAT/firewall dropped the idle flow).\n\n\
Exit status: 0 alive, 1 dead, 2 bad usage, 3 reset, 4 unreachable, 5 no such established \
connection, 6 missing privilege, 7 other failure.",
    after_help = "Examples:\n  kaprobe probe 198.18.0.2:40000-198.51.100.2:9000\n  \
kaprobe probe --time 0s --intvl 500ms --probes 3 198.51.100.2:9000\n  \
kaprobe --json --netns lab-a probe '[2001:db8:18::1]:40000-[2001:db8:18::2]:9000'"
)]
pub struct Cli {
    /// More output: -v one line per probe, -vv debug (RUST_LOG wins)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less output: -q errors only, -qq nothing on stderr
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    /// Machine output: one JSON object per line
    #[arg(long, global = true)]
    json: bool,
    /// Enter a network namespace first: NAME from `ip netns`, or a PATH such as /proc/PID/ns/net
    #[arg(long, global = true, value_name = "NAME|PATH")]
    netns: Option<String>,
    /// Enter the network namespace of process PID first (as `nsenter -t PID -n`)
    #[arg(long, global = true, value_name = "PID", conflicts_with = "netns",
          value_parser = clap::value_parser!(u32).range(1..))]
    pid: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the time/intvl/probes loop on one connection, then print one verdict
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
}

pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 500ms, 75s, 2h"))
}

#[derive(Args, Debug, Clone, Copy)]
pub struct TimingArgs {
    /// Idle time (since the last segment received) before the first probe
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub time: Duration,
    /// Time between unanswered probes, and the wait after the last one
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub intvl: Duration,
    /// Unanswered probes before the verdict `dead`
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=255))]
    pub probes: u8,
}

impl TimingArgs {
    pub fn timing(&self) -> Timing {
        Timing {
            time: self.time,
            intvl: self.intvl,
            probes: self.probes,
        }
    }
}

/// How probes are made, shared by `probe`, `sweep` and `watch`.
#[derive(Args, Debug, Clone, Copy)]
pub struct ProbeStyle {
    /// How to learn the connections' sequence numbers
    #[arg(long, value_enum, default_value = "local", value_name = "SOURCE")]
    pub seq_source: SeqSourceArg,
    /// Send one already-acknowledged byte in each probe, as some stacks do
    #[arg(long)]
    pub garbage_octet: bool,
}

/// Default cap on packets kaprobe causes on the wire per second (probes, and the local
/// kernel's challenge ACKs its SYNs trigger).
pub const DEFAULT_RATE: u32 = 50_000;

/// The send-rate cap of the commands that probe many connections.
#[derive(Args, Debug, Clone, Copy)]
pub struct RateArgs {
    /// At most this many packets per second on the wire (probes and challenge ACKs)
    #[arg(long, value_name = "PPS", default_value_t = DEFAULT_RATE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqSourceArg {
    /// A SYN injected into the local stack makes the local socket tell its numbers
    Local,
    /// Out-of-window first probe; stateful firewalls drop it
    Peer,
    /// Wait for a segment of the connection on the wire
    Sniff,
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
    b.format(|f, record| {
        use std::io::Write;
        match record.level() {
            log::Level::Info => writeln!(f, "kaprobe: {}", record.args()),
            l => writeln!(
                f,
                "kaprobe: {}: {}",
                l.as_str().to_lowercase(),
                record.args()
            ),
        }
    });
    let _ = b.try_init();
}

/// Parses the command line and runs it; returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return EXIT_USAGE;
            }
            eprintln!("kaprobe: {}", one_line(&e.render().to_string()));
            return EXIT_USAGE;
        }
    };
    init_logging(cli.verbose, cli.quiet);
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kaprobe: {e}");
            e.exit_code()
        }
    }
}

/// clap's message up to its usage block, on one line.
fn one_line(rendered: &str) -> String {
    let body: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
        .map(str::trim)
        .collect();
    body.join(" ").trim_start_matches("error: ").to_string()
}

fn run(cli: &Cli) -> Result<i32> {
    netns::enter_from_args(cli.netns.as_deref(), cli.pid)?;
    let ctx = Ctx {
        json: cli.json,
        verbose: cli.verbose > 0,
        quiet: cli.quiet > 0,
    };
    match &cli.command {
        Command::Probe(args) => cmd::probe::run(args, &ctx),
        Command::Sweep(args) => cmd::sweep::run(args, &ctx),
        Command::Watch(args) => cmd::watch::run(args, &ctx),
        Command::Sniff(args) => cmd::sniff::run(args, &ctx),
        Command::NatTimeout(args) => cmd::nat_timeout::run(args, &ctx),
        Command::List(args) => cmd::list::run(args, &ctx),
        Command::Enable(args) => cmd::enable::run(args, &ctx),
        Command::Config(args) => cmd::config::run(args, &ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let a =
            Cli::try_parse_from(["kaprobe", "--json", "-v", "probe", "198.51.100.2:9000"]).unwrap();
        let b =
            Cli::try_parse_from(["kaprobe", "probe", "198.51.100.2:9000", "--json", "-v"]).unwrap();
        assert!(a.json && b.json);
        assert_eq!(a.verbose, 1);
        assert_eq!(b.verbose, 1);
    }

    #[test]
    fn bad_values_are_usage_errors_on_one_line() {
        for args in [
            vec!["kaprobe", "probe", "--probes", "0", "198.51.100.2:9000"],
            vec!["kaprobe", "probe", "--probes", "256", "198.51.100.2:9000"],
            vec!["kaprobe", "probe", "--intvl", "soon", "198.51.100.2:9000"],
            vec!["kaprobe", "probe", "198.51.100.2:0"],
            vec!["kaprobe", "probe"],
        ] {
            let e = Cli::try_parse_from(&args).expect_err(&args.join(" "));
            let line = one_line(&e.render().to_string());
            assert!(!line.is_empty() && !line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let cli = Cli::try_parse_from(["kaprobe", "probe", "198.51.100.2:9000"]).unwrap();
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
        assert_eq!(p.style.seq_source, SeqSourceArg::Local);
    }
}
