//! `kaprobe list`: established connections with idle time, owner and keepalive timer.
//!
//! One sock_diag dump (with `tcp_info`) and one scan of `/proc/*/fd` per run, whatever the
//! number of connections. Rows are sorted by flow. Exit 0 when any connection is listed, 5
//! when none matches the filters.
//!
//! The keepalive column reads the socket timer sock_diag reports. sock_diag shows one timer
//! per socket: while the retransmit or zero-window-probe timer runs, an armed keepalive timer
//! is hidden behind it, and the state shows as unknown.

use std::collections::HashSet;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::Ctx;
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::filter::FilterArgs;
use crate::fleet::conn_view;
use crate::flow::{Flow, Signature};
use crate::sys::diag::{Conn, Diag};
use crate::sys::keepalive::Keepalive;
use crate::sys::owner::{Owner, Owners};

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// One listed connection.
struct Row<'a> {
    flow: Flow,
    idle: Option<Duration>,
    unacked: Option<u32>,
    send_queue: u32,
    recv_queue: u32,
    keepalive: Keepalive,
    /// TCP-MD5: kaprobe cannot probe it (README "Policy routing, VRFs, bound sockets").
    signature: Option<Signature>,
    inode: u32,
    uid: u32,
    owners: &'a [Owner],
}

impl<'a> Row<'a> {
    fn new(c: &Conn, owners: &'a Owners) -> Row<'a> {
        Row {
            flow: c.flow,
            idle: c.info.as_ref().map(|_| conn_view(c).idle),
            unacked: c.info.as_ref().map(|i| i.unacked),
            send_queue: c.send_queue,
            recv_queue: c.recv_queue,
            keepalive: Keepalive::of(c),
            signature: c.signature,
            inode: c.inode,
            uid: c.uid,
            owners: owners.of(c.inode),
        }
    }

    fn json(&self) -> Value {
        let mut o = json!({
            "event": "connection",
            "flow": self.flow.to_string(),
            "local": self.flow.local.to_string(),
            "remote": self.flow.remote.to_string(),
            "idle_ms": self.idle.map(crate::output::millis),
            "unacked": self.unacked,
            "send_queue": self.send_queue,
            "recv_queue": self.recv_queue,
            "inode": self.inode,
            "uid": self.uid,
            "owners": crate::output::owners_json(self.owners),
            "signature": self.signature.map(Signature::token),
        });
        crate::output::keepalive_fields(&self.keepalive, &mut o);
        o
    }

    fn cells(&self) -> [String; 8] {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        [
            self.flow.local.to_string(),
            self.flow.remote.to_string(),
            opt(self.idle.map(crate::output::duration)),
            opt(self.unacked.map(|u| u.to_string())),
            self.recv_queue.to_string(),
            self.send_queue.to_string(),
            match self.signature {
                // `signed=md5`: noted where it is seen first, next to the keepalive state.
                Some(sig) => format!(
                    "{} signed={}",
                    crate::output::keepalive(&self.keepalive),
                    sig.token().trim_start_matches("tcp-")
                ),
                None => crate::output::keepalive(&self.keepalive),
            },
            owners_cell(self.owners),
        ]
    }
}

/// `1234/nginx,1240/nginx`, each process once; `-` when none was found.
fn owners_cell(owners: &[Owner]) -> String {
    let mut seen = HashSet::new();
    let names: Vec<String> = owners
        .iter()
        .filter(|o| seen.insert(o.pid))
        .map(Owner::to_string)
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

const HEADER: [&str; 8] = [
    "Local",
    "Remote",
    "Idle",
    "Unacked",
    "Recv-Q",
    "Send-Q",
    "Keepalive",
    "Process",
];
/// Columns printed right-aligned (numbers).
const RIGHT: [bool; 8] = [false, false, true, true, true, true, false, false];

/// Aligned columns with a header, like `ss`; the last column is not padded.
fn table(rows: &[[String; 8]]) -> String {
    let mut width = HEADER.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(String::from);
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let last = i + 1 == r.len();
            let padded = match (RIGHT[i], last) {
                (_, true) => cell.clone(),
                (true, false) => format!("{cell:>w$}  ", w = width[i]),
                (false, false) => format!("{cell:<w$}  ", w = width[i]),
            };
            line.push_str(&padded);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn run(args: &ListArgs, ctx: &Ctx) -> Result<ExitStatus> {
    let mut diag = Diag::open()?;
    let mut conns: Vec<Conn> = args.filter.require_established(&mut diag)?;
    conns.sort_by_key(|c| c.flow);
    conns.dedup_by_key(|c| c.flow);
    let wanted: HashSet<u32> = conns.iter().map(|c| c.inode).filter(|&i| i != 0).collect();
    let owners = Owners::scan(&wanted);
    if owners.unreadable > 0 {
        log::info!(
            "the descriptors of {} could not be read; run as root to see every owner",
            crate::output::count(owners.unreadable as u64, "process")
        );
    }
    let rows: Vec<Row> = conns.iter().map(|c| Row::new(c, &owners)).collect();
    crate::output::print(&render(&rows, ctx.json))?;
    Ok(ExitStatus::Success)
}

/// Every row, as JSON lines or as the table.
fn render(rows: &[Row], json: bool) -> String {
    if json {
        rows.iter()
            .map(|r| format!("{}\n", crate::output::stamped(r.json())))
            .collect()
    } else {
        let cells: Vec<[String; 8]> = rows.iter().map(Row::cells).collect();
        table(&cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sys::diag::test_conn as conn;

    #[test]
    fn rows_without_tcp_info_or_owner_show_dashes() {
        let owners = Owners::default();
        let c = conn(None);
        let row = Row::new(&c, &owners);
        let cells = row.cells();
        assert_eq!(cells[2], "-");
        assert_eq!(cells[3], "-");
        assert_eq!(cells[7], "-");
        let j = row.json();
        assert_eq!(j["event"], "connection");
        assert_eq!(j["flow"], "198.18.0.1:40000-198.18.0.2:9000");
        assert!(j["idle_ms"].is_null());
        assert_eq!(j["recv_queue"], 3);
        assert_eq!(j["owners"], json!([]));
        assert!(j["signature"].is_null());
    }

    #[test]
    fn signed_connections_are_marked() {
        let owners = Owners::default();
        let mut c = conn(None);
        c.signature = Some(Signature::Md5);
        let row = Row::new(&c, &owners);
        assert_eq!(row.cells()[6], "off signed=md5");
        assert_eq!(row.json()["signature"], "tcp-md5");
    }

    #[test]
    fn owners_cell_names_each_process_once() {
        let o = |pid, fd| Owner {
            pid,
            fd,
            command: "nginx".into(),
        };
        assert_eq!(
            owners_cell(&[o(10, 3), o(10, 4), o(11, 3)]),
            "10/nginx,11/nginx"
        );
    }

    #[test]
    fn table_aligns_columns_under_the_header() {
        let row = |a: &str, idle: &str| {
            [
                a.to_string(),
                "198.18.0.2:9000".into(),
                idle.into(),
                "0".into(),
                "0".into(),
                "0".into(),
                "off".into(),
                "1/init".into(),
            ]
        };
        let t = table(&[
            row("198.18.0.1:40000", "1.5s"),
            row("[2001:db8:18::1]:40001", "2h11m15s"),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("Local "));
        // Every column starts at the same offset on every line.
        let col = |l: &str, needle: &str| l.find(needle).unwrap();
        assert_eq!(col(lines[0], "Remote"), col(lines[1], "198.18.0.2"));
        assert_eq!(col(lines[1], "198.18.0.2"), col(lines[2], "198.18.0.2"));
        // Right-aligned numbers end where their header ends.
        let end = |l: &str, needle: &str| col(l, needle) + needle.len();
        assert_eq!(end(lines[0], "Idle"), end(lines[1], "1.5s"));
        assert_eq!(end(lines[0], "Idle"), end(lines[2], "2h11m15s"));
        assert_eq!(col(lines[0], "Process"), col(lines[2], "1/init"));
    }
}
