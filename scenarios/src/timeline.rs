//! A run as a picture: one self-contained HTML page (inline SVG and CSS, no script, no
//! external assets) drawn from a run's trace lines and its report.
//!
//! Input. The trace is what `run --trace` prints to stderr, one event per line:
//! `{now_ns:>14} n{id} {kind} {detail}` for a node's event and `{now_ns:>14} -- {kind}
//! {detail}` for a world event. A detail may itself hold newlines (message payloads
//! are printed with their raw bytes), so [`split_trace`] glues a line that does not
//! start like an event to the event before it. The report is what `run` prints to
//! stdout (the `SEED=` banner, summary, violation, replay line).
//!
//! What is drawn, left to right over simulated time:
//! - **one lane per node**: a band coloured by what the node was. Life comes straight
//!   from the trace: `start`/`restart` bring a node up, `crash` takes it down until the
//!   next start (grey hatching), `pause` stops it until `resume` (amber hatching),
//!   `fail-stop` ends it for good. Role and term are not traced and are derived from
//!   the Raft messages a node sends (`term=` is the sender's term): `Append`,
//!   `Heartbeat`, `SnapshotChunk`, `TimeoutNow` or `ReadIndexResp` in term T make it
//!   the leader of T; `Vote` a candidate of T; `PreVote` (which carries T+1) a
//!   pre-candidate in T-1; replies (`AppendResp`, `HeartbeatResp`, `VoteResp`, ...) a
//!   follower of T, unless it already leads or campaigns in T. `start` lines give the
//!   recovered term. A leader that sends nothing a leader sends for
//!   [`LEADER_SILENT_NS`] is shown with an unknown role from then on (it stepped down
//!   silently, by check-quorum, say). Nodes that never send Raft messages (the register
//!   scenario) just show up/down/paused.
//! - under each band, **client operations** addressed to that node: invocations
//!   (blue), successes (green) and failures (red: `Err`, `NotLeader`, `Unavailable`,
//!   timeouts), merged into runs of adjacent pixels;
//! - glyphs on the lane for backups (`admin ... backup`, and their replies), snapshot
//!   installs, membership changes, failed starts and skipped faults (`fault-skipped`);
//! - a **network lane**: each partition (`fault`) as a shaded span until the next
//!   `heal` (heals restore every link) or the liveness phase, with its description,
//!   plus dashed vertical markers across all lanes;
//! - an **operations lane**: invocations and completions counted per time bucket;
//! - the **failure**, if the run failed: a red line at the last traced event (where the
//!   checker stopped the run) with the violation, and dotted red lines at times the
//!   violation cites (`at 583652012`).
//!
//! Size. Everything is reduced to pixels before it is written: runs of role segments
//! narrower than a few pixels are merged (the merged rectangle shows the most severe
//! state), ticks and glyphs are bucketed per few pixels and adjacent buckets merged,
//! vertical markers of one kind share a pixel, so a run of hundreds of thousands of
//! events still makes a page of well under 2 MB (pinned by a test).
//!
//! The page is a picture of the trace, not a second checker: roles are inferred, and
//! a role the trace cannot show (a follower that never replies) is not drawn.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// A leader that sends no leader message for this long is no longer shown as leader.
pub const LEADER_SILENT_NS: u64 = 300_000_000;

const PLOT_X: f64 = 120.0;
const PLOT_W: f64 = 1400.0;
const RIGHT_PAD: f64 = 30.0;
const AXIS_H: f64 = 28.0;
const LANE_H: f64 = 34.0;
const BAND_H: f64 = 20.0;
const NET_LEVEL_H: f64 = 16.0;
const NET_LEVELS_MAX: usize = 6;
const FAILURE_ROW_H: f64 = 20.0;
const OPS_LANE_H: f64 = 60.0;
const OPS_BUCKETS: usize = 175;
const TICK_BUCKET_PX: f64 = 2.0;
const MARK_BUCKET_PX: f64 = 4.0;
const MIN_SEGMENT_PX: f64 = 3.0;

/// One parsed trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEvent<'a> {
    pub at_ns: u64,
    /// `None` for world events (`--`).
    pub node: Option<u64>,
    pub kind: &'a str,
    pub detail: &'a str,
}

/// Parse one trace line; `None` if it does not look like one.
pub fn parse_line(line: &str) -> Option<TraceEvent<'_>> {
    let rest = line.trim_start();
    let (time, rest) = rest.split_once(' ')?;
    let at_ns = time.parse().ok()?;
    let (who, rest) = rest.split_once(' ')?;
    let node = match who {
        "--" => None,
        n => Some(n.strip_prefix('n')?.parse().ok()?),
    };
    let (kind, detail) = rest.split_once(' ').unwrap_or((rest, ""));
    if kind.is_empty() {
        return None;
    }
    Some(TraceEvent {
        at_ns,
        node,
        kind,
        detail,
    })
}

/// Split captured trace output into events: a line that does not parse as an event
/// continues the one before it (a payload with a newline in it); leading garbage is
/// dropped.
pub fn split_trace(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        if parse_line(line).is_some() {
            lines.push(line.to_string());
        } else if let Some(last) = lines.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    lines
}

// ---- the model ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Not started yet (a spare node, a client).
    Absent,
    Up,
    Paused,
    Down,
    /// Fail-stop: down for good.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Unknown,
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Band {
    life: Life,
    role: Role,
    term: Option<u64>,
}

impl Band {
    const ABSENT: Band = Band {
        life: Life::Absent,
        role: Role::Unknown,
        term: None,
    };

    /// For merging sub-pixel segments: the state a reader most needs to see.
    fn severity(&self) -> u8 {
        match (self.life, self.role) {
            (Life::Stopped, _) => 9,
            (Life::Down, _) => 8,
            (Life::Paused, _) => 7,
            (Life::Up, Role::Leader) => 6,
            (Life::Up, Role::Candidate) => 5,
            (Life::Up, Role::PreCandidate) => 4,
            (Life::Up, Role::Follower) => 3,
            (Life::Up, Role::Unknown) => 2,
            (Life::Absent, _) => 1,
        }
    }

    fn class(&self) -> &'static str {
        match (self.life, self.role) {
            (Life::Absent, _) => "absent",
            (Life::Stopped, _) => "stopped",
            (Life::Down, _) => "down",
            (Life::Paused, _) => "paused",
            (Life::Up, Role::Leader) => "leader",
            (Life::Up, Role::Candidate) => "candidate",
            (Life::Up, Role::PreCandidate) => "precandidate",
            (Life::Up, Role::Follower) => "follower",
            (Life::Up, Role::Unknown) => "up",
        }
    }

    fn describe(&self) -> String {
        let what = match (self.life, self.role) {
            (Life::Absent, _) => "not started",
            (Life::Stopped, _) => "fail-stopped",
            (Life::Down, _) => "crashed",
            (Life::Paused, _) => "paused",
            (Life::Up, Role::Leader) => "leader",
            (Life::Up, Role::Candidate) => "candidate",
            (Life::Up, Role::PreCandidate) => "pre-candidate",
            (Life::Up, Role::Follower) => "follower",
            (Life::Up, Role::Unknown) => "up (role unknown)",
        };
        match self.term {
            Some(t) if matches!(self.life, Life::Up | Life::Paused) => format!("{what}, term {t}"),
            _ => what.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
struct Segment {
    start_ns: u64,
    end_ns: u64,
    band: Band,
    note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Invoke,
    Ok,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MarkKind {
    Backup,
    BackupDone,
    BackupFailed,
    Snapshot,
    Conf,
    StartFailed,
    Skipped,
    NodeFault,
}

impl MarkKind {
    fn class(self) -> &'static str {
        match self {
            MarkKind::Backup => "m-backup",
            MarkKind::BackupDone => "m-backup-done",
            MarkKind::BackupFailed => "m-backup-failed",
            MarkKind::Snapshot => "m-snapshot",
            MarkKind::Conf => "m-conf",
            MarkKind::StartFailed => "m-start-failed",
            MarkKind::Skipped => "m-skipped",
            MarkKind::NodeFault => "m-node-fault",
        }
    }

    fn name(self) -> &'static str {
        match self {
            MarkKind::Backup => "backup requested",
            MarkKind::BackupDone => "backup done",
            MarkKind::BackupFailed => "backup failed",
            MarkKind::Snapshot => "snapshot installed",
            MarkKind::Conf => "membership change",
            MarkKind::StartFailed => "start failed",
            MarkKind::Skipped => "fault skipped",
            MarkKind::NodeFault => "fault",
        }
    }
}

#[derive(Debug, Clone)]
struct Mark {
    at_ns: u64,
    kind: MarkKind,
    text: String,
}

#[derive(Debug, Clone)]
struct Lane {
    band: Band,
    since_ns: u64,
    note: String,
    segments: Vec<Segment>,
    last_leader_ns: u64,
    ops: Vec<(u64, Op)>,
    marks: Vec<Mark>,
    /// Had a life event (start, crash, ...): a server, not just a client.
    server: bool,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            band: Band::ABSENT,
            since_ns: 0,
            note: String::new(),
            segments: Vec::new(),
            last_leader_ns: 0,
            ops: Vec::new(),
            marks: Vec::new(),
            server: false,
        }
    }

    fn set(&mut self, at_ns: u64, band: Band, note: &str) {
        if band == self.band {
            return;
        }
        let at_ns = at_ns.max(self.since_ns);
        if at_ns > self.since_ns {
            self.segments.push(Segment {
                start_ns: self.since_ns,
                end_ns: at_ns,
                band: self.band,
                note: std::mem::take(&mut self.note),
            });
        }
        self.band = band;
        self.since_ns = at_ns;
        self.note = note.to_string();
    }

    fn finish(&mut self, end_ns: u64) {
        if end_ns > self.since_ns {
            self.segments.push(Segment {
                start_ns: self.since_ns,
                end_ns,
                band: self.band,
                note: std::mem::take(&mut self.note),
            });
        }
        self.since_ns = end_ns;
    }
}

#[derive(Debug, Clone)]
struct Span {
    start_ns: u64,
    end_ns: u64,
    text: String,
}

/// Everything the picture needs, derived from the trace.
#[derive(Debug, Default)]
struct Model {
    end_ns: u64,
    lanes: BTreeMap<u64, Lane>,
    /// Partitions, open ones have `end_ns == u64::MAX` until healed.
    spans: Vec<Span>,
    /// (time, kind, text) of vertical markers: fault, heal, liveness, skipped.
    markers: Vec<(u64, &'static str, String)>,
    /// Operations not attributable to a node.
    world_ops: Vec<(u64, Op)>,
    kinds: BTreeMap<String, u64>,
    events: u64,
}

/// A Raft message in a `send` detail: (kind, term).
fn raft_message(detail: &str) -> Option<(&str, u64)> {
    // `1->2 Append term=3 ...`, or wrapped: `Raft(1->2 Append term=3 ...)`.
    let is_id = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let mut words = detail.split(' ');
    words.by_ref().find(|w| {
        let w = w.rsplit('(').next().unwrap_or(w);
        w.split_once("->")
            .is_some_and(|(a, b)| is_id(a) && is_id(b))
    })?;
    let name = words.next()?;
    let term_word = words.next()?;
    let term = term_word
        .strip_prefix("term=")?
        .trim_end_matches(')')
        .parse()
        .ok()?;
    Some((name, term))
}

/// The number after `key` in `text` (`term: 3` with key `term: `).
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `#14 -> n1` / `#14 from n1`: request id and node.
fn request_and_node(detail: &str) -> (Option<u64>, Option<u64>) {
    let request = number_after(detail, "#");
    let node = number_after(detail, "-> n").or_else(|| number_after(detail, "from n"));
    (request, node)
}

fn reply_failed(detail: &str) -> bool {
    let payload = detail.split_once(": ").map_or(detail, |(_, p)| p);
    [
        "NotLeader",
        "Unavailable",
        "Invalid",
        "BackupFailed",
        "Err",
        "Error",
    ]
    .iter()
    .any(|p| payload.starts_with(p))
        || payload.contains("status: Failed")
}

impl Model {
    fn lane(&mut self, id: u64) -> &mut Lane {
        self.lanes.entry(id).or_insert_with(Lane::new)
    }

    fn build(lines: &[String]) -> Model {
        let mut m = Model::default();
        // request id -> node, and which requests are admin (backup) requests.
        let mut request_node: BTreeMap<u64, u64> = BTreeMap::new();
        let mut admin: BTreeSet<u64> = BTreeSet::new();
        for line in lines {
            let Some(ev) = parse_line(line) else { continue };
            m.events += 1;
            *m.kinds.entry(ev.kind.to_string()).or_default() += 1;
            m.end_ns = m.end_ns.max(ev.at_ns);
            m.expire_silent_leaders(ev.at_ns);
            match ev.node {
                Some(id) => m.node_event(id, &ev),
                None => m.world_event(&ev, &mut request_node, &mut admin),
            }
        }
        m.expire_silent_leaders(m.end_ns);
        let end = m.end_ns.max(1);
        m.end_ns = end;
        for lane in m.lanes.values_mut() {
            lane.finish(end);
        }
        for s in &mut m.spans {
            s.end_ns = s.end_ns.min(end);
        }
        m
    }

    fn expire_silent_leaders(&mut self, now_ns: u64) {
        for lane in self.lanes.values_mut() {
            if lane.band.life == Life::Up
                && lane.band.role == Role::Leader
                && now_ns > lane.last_leader_ns + LEADER_SILENT_NS
            {
                let band = Band {
                    role: Role::Unknown,
                    ..lane.band
                };
                let at = lane.last_leader_ns + LEADER_SILENT_NS;
                lane.set(at, band, "no leader messages for a while: stepped down?");
            }
        }
    }

    fn node_event(&mut self, id: u64, ev: &TraceEvent<'_>) {
        let at = ev.at_ns;
        let lane = self.lane(id);
        let up = |role, term| Band {
            life: Life::Up,
            role,
            term,
        };
        match ev.kind {
            "start" | "restart" => {
                lane.server = true;
                let term = number_after(ev.detail, "term: ");
                let role = if ev.detail.contains("HardState") {
                    Role::Follower
                } else {
                    Role::Unknown
                };
                lane.set(at, up(role, term.or(lane.band.term)), ev.detail);
            }
            "crash" => {
                lane.server = true;
                let band = Band {
                    life: Life::Down,
                    role: Role::Unknown,
                    term: lane.band.term,
                };
                lane.set(at, band, &format!("crash: {}", ev.detail));
            }
            "fail-stop" => {
                lane.server = true;
                let band = Band {
                    life: Life::Stopped,
                    role: Role::Unknown,
                    term: None,
                };
                lane.set(at, band, &format!("fail-stop: {}", ev.detail));
            }
            "pause" => {
                lane.server = true;
                let band = Band {
                    life: Life::Paused,
                    ..lane.band
                };
                lane.set(at, band, "paused");
            }
            "resume" => {
                lane.last_leader_ns = at;
                let band = Band {
                    life: Life::Up,
                    ..lane.band
                };
                lane.set(at, band, "resumed");
            }
            "send" => {
                if let Some((kind, term)) = raft_message(ev.detail) {
                    lane.raft_send(at, kind, term);
                }
            }
            "start-failed" | "restart-failed" => lane.marks.push(Mark {
                at_ns: at,
                kind: MarkKind::StartFailed,
                text: ev.detail.to_string(),
            }),
            "install-snapshot" => lane.marks.push(Mark {
                at_ns: at,
                kind: MarkKind::Snapshot,
                text: ev.detail.to_string(),
            }),
            "conf" | "propose-conf" => lane.marks.push(Mark {
                at_ns: at,
                kind: MarkKind::Conf,
                text: ev.detail.to_string(),
            }),
            "fault-skipped" => lane.marks.push(Mark {
                at_ns: at,
                kind: MarkKind::Skipped,
                text: ev.detail.to_string(),
            }),
            "fault" => {
                lane.marks.push(Mark {
                    at_ns: at,
                    kind: MarkKind::NodeFault,
                    text: ev.detail.to_string(),
                });
                let text = format!("n{id}: {}", ev.detail);
                self.open_span(at, &text);
            }
            "propose" | "read-index" => {
                let op = if ev.detail.contains("-> Err") {
                    Op::Fail
                } else {
                    Op::Ok
                };
                lane.ops.push((at, op));
            }
            "invoke" => lane.ops.push((at, Op::Invoke)),
            "complete" => lane.ops.push((at, Op::Ok)),
            _ => {}
        }
    }

    fn world_event(
        &mut self,
        ev: &TraceEvent<'_>,
        request_node: &mut BTreeMap<u64, u64>,
        admin: &mut BTreeSet<u64>,
    ) {
        let at = ev.at_ns;
        match ev.kind {
            "fault" => self.open_span(at, ev.detail),
            "fault-skipped" => self.markers.push((at, "skipped", ev.detail.to_string())),
            "heal" => {
                self.close_spans(at);
                self.markers
                    .push((at, "heal", "heal: every link restored".into()));
            }
            "liveness-phase" => {
                self.close_spans(at);
                self.markers
                    .push((at, "liveness", format!("liveness phase: {}", ev.detail)));
            }
            "client" | "admin" => {
                let (request, node) = request_and_node(ev.detail);
                if let (Some(r), Some(n)) = (request, node) {
                    request_node.insert(r, n);
                }
                let is_backup = ev.kind == "admin" && ev.detail.contains("backup");
                if let (true, Some(r)) = (ev.kind == "admin", request) {
                    admin.insert(r);
                }
                match node {
                    Some(n) => {
                        let lane = self.lane(n);
                        lane.ops.push((at, Op::Invoke));
                        if is_backup {
                            lane.marks.push(Mark {
                                at_ns: at,
                                kind: MarkKind::Backup,
                                text: ev.detail.to_string(),
                            });
                        }
                    }
                    None => self.world_ops.push((at, Op::Invoke)),
                }
            }
            "reply" => {
                let (request, node) = request_and_node(ev.detail);
                let failed = reply_failed(ev.detail);
                let op = if failed { Op::Fail } else { Op::Ok };
                let node = node.or_else(|| request.and_then(|r| request_node.get(&r).copied()));
                match node {
                    Some(n) => {
                        let lane = self.lane(n);
                        lane.ops.push((at, op));
                        if request.is_some_and(|r| admin.contains(&r)) {
                            let kind = if failed {
                                MarkKind::BackupFailed
                            } else {
                                MarkKind::BackupDone
                            };
                            lane.marks.push(Mark {
                                at_ns: at,
                                kind,
                                text: ev.detail.to_string(),
                            });
                        }
                    }
                    None => self.world_ops.push((at, op)),
                }
            }
            "timeout" => {
                let request = number_after(ev.detail, "#");
                match request.and_then(|r| request_node.get(&r).copied()) {
                    Some(n) => self.lane(n).ops.push((at, Op::Fail)),
                    None => self.world_ops.push((at, Op::Fail)),
                }
            }
            _ => {}
        }
    }

    fn open_span(&mut self, at: u64, text: &str) {
        self.spans.push(Span {
            start_ns: at,
            end_ns: u64::MAX,
            text: text.to_string(),
        });
        self.markers.push((at, "fault", format!("fault: {text}")));
    }

    fn close_spans(&mut self, at: u64) {
        for s in &mut self.spans {
            if s.end_ns == u64::MAX {
                s.end_ns = at;
            }
        }
    }
}

impl Lane {
    fn raft_send(&mut self, at: u64, kind: &str, term: u64) {
        let current = self.band;
        let up = |role, term| Band {
            life: Life::Up,
            role,
            term: Some(term),
        };
        let next = match kind {
            "Append" | "Heartbeat" | "SnapshotChunk" | "TimeoutNow" | "ReadIndexResp" => {
                self.last_leader_ns = at;
                Some(up(Role::Leader, term))
            }
            "Vote" => Some(up(Role::Candidate, term)),
            "PreVote" => Some(up(Role::PreCandidate, term.saturating_sub(1))),
            // A candidate refuses a rival's vote in its own term and stays a candidate;
            // a leader answers a stale leader's append in its own term and stays leader.
            // Otherwise whoever replies in term T follows in T.
            "VoteResp" => {
                let keeps = current.term == Some(term)
                    && matches!(current.role, Role::Leader | Role::Candidate);
                (!keeps).then(|| up(Role::Follower, term))
            }
            "AppendResp" | "HeartbeatResp" | "SnapshotChunkResp" | "ReadIndex"
            | "TransferLeader" => {
                let keeps = current.term == Some(term) && current.role == Role::Leader;
                (!keeps).then(|| up(Role::Follower, term))
            }
            _ => None,
        };
        if let Some(band) = next {
            let note = format!("from its {kind} messages");
            self.set(at, band, &note);
        }
    }
}

// ---- the report -----------------------------------------------------------------------

#[derive(Debug, Default)]
struct ReportInfo {
    banner: String,
    summary: String,
    violation: Option<String>,
    replay: Option<String>,
    failed: bool,
}

fn parse_report(text: &str) -> ReportInfo {
    let mut info = ReportInfo::default();
    let mut after_banner = false;
    for line in text.lines() {
        if line.starts_with("SEED=") {
            info.failed = line.contains(" FAILED ");
            info.banner = line.to_string();
            after_banner = true;
        } else if let Some(v) = line.strip_prefix("  violation: ") {
            info.violation = Some(v.to_string());
        } else if line.starts_with("replay: ") {
            info.replay = Some(line.to_string());
        } else if after_banner && info.summary.is_empty() && line.starts_with("  ") {
            info.summary = line.trim().to_string();
        }
    }
    info
}

/// Times a violation cites (`at 583652012`), at least 1 ms (smaller numbers are more
/// likely indexes than times).
fn cited_times(violation: &str, end_ns: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut rest = violation;
    while let Some(i) = rest.find(" at ") {
        rest = &rest[i + 4..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(t) = digits.parse::<u64>()
            && (1_000_000..=end_ns).contains(&t)
        {
            out.push(t);
        }
    }
    out
}

// ---- drawing --------------------------------------------------------------------------

/// Escape text for HTML and SVG; control characters become `·`.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push('\n'),
            c if c.is_control() => out.push('·'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max_chars` characters of `text`, with an ellipsis if cut.
fn clip(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// `1.234 s`, `12.5 ms`, `300 µs`.
pub fn format_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

struct Scale {
    end_ns: u64,
}

impl Scale {
    fn x(&self, ns: u64) -> f64 {
        PLOT_X + (ns.min(self.end_ns) as f64) * PLOT_W / (self.end_ns as f64)
    }

    fn ns_per_px(&self) -> f64 {
        self.end_ns as f64 / PLOT_W
    }
}

const STYLE: &str = "
body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 16px; margin: 0 0 4px; font-family: ui-monospace, monospace; }
.summary { color: #555; font-family: ui-monospace, monospace; font-size: 12px; }
.violation { color: #b00; font-weight: bold; }
.ok { color: #2a7; font-weight: bold; }
code, pre { font-family: ui-monospace, monospace; font-size: 12px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
.legend span { display: inline-block; margin-right: 14px; }
.legend svg { vertical-align: middle; margin-right: 4px; }
svg text { font: 11px ui-monospace, monospace; }
.lane-label { font-weight: bold; }
.follower { fill: #cfe2f3; } .leader { fill: #38a169; } .candidate { fill: #ed8936; }
.precandidate { fill: #fbd38d; } .up { fill: #e2e8f0; } .absent { fill: none; }
.down { fill: url(#hatch-down); } .paused { fill: url(#hatch-paused); }
.stopped { fill: #2d3748; }
.band-text { fill: #1a202c; pointer-events: none; } .band-text.on-dark { fill: #fff; }
.op-invoke { fill: #3182ce; } .op-ok { fill: #38a169; } .op-fail { fill: #e53e3e; }
.net-span { fill: #805ad5; fill-opacity: 0.25; stroke: #805ad5; stroke-width: 0.5; }
.mk-fault { stroke: #805ad5; stroke-dasharray: 3 3; stroke-width: 1; }
.mk-heal { stroke: #38a169; stroke-dasharray: 2 4; stroke-width: 1; }
.mk-liveness { stroke: #3182ce; stroke-width: 1.5; }
.mk-skipped { stroke: #a0aec0; stroke-dasharray: 1 3; stroke-width: 1; }
.failure { stroke: #e53e3e; stroke-width: 2; }
.cited { stroke: #e53e3e; stroke-dasharray: 2 2; stroke-width: 1; }
.failure-text { fill: #e53e3e; font-weight: bold; }
.m-backup { fill: #2b6cb0; } .m-backup-done { fill: #38a169; } .m-backup-failed { fill: #e53e3e; }
.m-snapshot { fill: #6b46c1; } .m-conf { fill: #d69e2e; } .m-start-failed { fill: #e53e3e; }
.m-skipped { fill: none; stroke: #718096; } .m-node-fault { fill: #805ad5; }
.grid { stroke: #e2e8f0; stroke-width: 1; }
.lane-bg { fill: #fafafa; }
";

const DEFS: &str = r##"<defs>
<pattern id="hatch-down" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#cbd5e0"/><line x1="0" y1="0" x2="0" y2="6" stroke="#718096" stroke-width="2"/></pattern>
<pattern id="hatch-paused" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><rect width="6" height="6" fill="#fefcbf"/><line x1="0" y1="0" x2="0" y2="6" stroke="#d69e2e" stroke-width="2"/></pattern>
</defs>"##;

/// Render a run (its trace lines and its `run` report) as a self-contained HTML page.
pub fn render_html(trace_lines: &[String], report_text: &str) -> String {
    let model = Model::build(trace_lines);
    let info = parse_report(report_text);
    let scale = Scale {
        end_ns: model.end_ns,
    };
    let mut out = String::new();
    let title = if info.banner.is_empty() {
        "Ryu run timeline".to_string()
    } else {
        info.banner.clone()
    };
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    )
    .expect("writing to a String cannot fail");
    if !info.summary.is_empty() {
        writeln!(out, "<p class=\"summary\">{}</p>", esc(&info.summary))
            .expect("writing to a String cannot fail");
    }
    match &info.violation {
        Some(v) => {
            writeln!(out, "<p class=\"violation\">violation: {}</p>", esc(v))
                .expect("writing to a String cannot fail");
        }
        None if !info.failed && !info.banner.is_empty() => {
            writeln!(out, "<p class=\"ok\">run passed</p>")
                .expect("writing to a String cannot fail");
        }
        None => {}
    }
    if let Some(r) = &info.replay {
        writeln!(out, "<p><code>{}</code></p>", esc(r)).expect("writing to a String cannot fail");
    }
    out.push_str(&legend());
    out.push_str(&svg(&model, &info, &scale));
    writeln!(
        out,
        "<p class=\"summary\">{} trace events over {}: {}</p>",
        model.events,
        format_ns(model.end_ns),
        esc(&model
            .kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "))
    )
    .expect("writing to a String cannot fail");
    writeln!(
        out,
        "<details><summary>report</summary><pre>{}</pre></details>",
        esc(report_text)
    )
    .expect("writing to a String cannot fail");
    writeln!(
        out,
        "<p class=\"summary\">Roles are inferred from the Raft messages each node sends \
         (leader: Append/Heartbeat/SnapshotChunk; candidate: Vote; pre-candidate: PreVote; \
         follower: replies); a leader silent for {} is shown as role unknown. \
         Hover for details.</p>\n</body></html>",
        format_ns(LEADER_SILENT_NS)
    )
    .expect("writing to a String cannot fail");
    out
}

/// Swatches reuse the hatch patterns defined in the timeline's SVG (ids are
/// document-wide in HTML).
fn legend() -> String {
    let swatch = |class: &str, label: &str| {
        format!(
            "<span><svg width=\"22\" height=\"12\"><rect class=\"{class}\" width=\"22\" height=\"12\"/></svg>{label}</span>"
        )
    };
    let mut out = String::from("<p class=\"legend\">");
    for (class, label) in [
        ("leader", "leader"),
        ("candidate", "candidate"),
        ("precandidate", "pre-candidate"),
        ("follower", "follower"),
        ("up", "up, role unknown"),
        ("paused", "paused"),
        ("down", "crashed"),
        ("stopped", "fail-stopped"),
        ("op-invoke", "op invoked"),
        ("op-ok", "op ok"),
        ("op-fail", "op failed"),
        ("net-span", "partition"),
    ] {
        out.push_str(&swatch(class, label));
    }
    out.push_str(
        "<span>◆ backup</span><span>▲ snapshot</span><span>● membership</span>\
         <span>✕ start failed</span><span>○ fault skipped</span>\
         <span style=\"color:#b00\">│ failure</span></p>\n",
    );
    out
}

fn svg(model: &Model, info: &ReportInfo, scale: &Scale) -> String {
    let levels = net_levels(&model.spans, scale);
    let level_count = levels.iter().map(|l| l.0).max().map_or(1, |l| l + 1);
    let failure_row_h = if info.failed { FAILURE_ROW_H } else { 0.0 };
    let net_y = AXIS_H + failure_row_h + 8.0;
    let net_h = level_count as f64 * NET_LEVEL_H;
    let lanes_y = net_y + net_h + 8.0;
    let lanes_h = model.lanes.len() as f64 * LANE_H;
    let ops_y = lanes_y + lanes_h + 8.0;
    let height = ops_y + OPS_LANE_H + 10.0;
    let width = PLOT_X + PLOT_W + RIGHT_PAD;
    let mut s = String::new();
    writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width} {height:.0}\">{DEFS}"
    )
    .expect("writing to a String cannot fail");
    axis(&mut s, scale, height);
    // Network lane.
    writeln!(
        s,
        "<text class=\"lane-label\" x=\"4\" y=\"{:.1}\">network</text>",
        net_y + 12.0
    )
    .expect("writing to a String cannot fail");
    for (span, &(level, crowded)) in model.spans.iter().zip(&levels) {
        let x0 = scale.x(span.start_ns);
        let w = (scale.x(span.end_ns) - x0).max(1.0);
        let y = net_y + level as f64 * NET_LEVEL_H;
        let title = format!(
            "{} ({} – {})",
            span.text,
            format_ns(span.start_ns),
            format_ns(span.end_ns)
        );
        write!(
            s,
            "<rect class=\"net-span\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\"><title>{}</title></rect>",
            NET_LEVEL_H - 2.0,
            esc(&title)
        ).expect("writing to a String cannot fail");
        let chars = (w / 6.6) as usize;
        if chars >= 4 && !crowded {
            write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x0 + 2.0,
                y + 11.0,
                esc(&clip(&span.text, chars))
            )
            .expect("writing to a String cannot fail");
        }
        s.push('\n');
    }
    // Node lanes.
    for (i, (id, lane)) in model.lanes.iter().enumerate() {
        let y = lanes_y + i as f64 * LANE_H;
        lane_svg(&mut s, *id, lane, y, scale);
    }
    ops_lane(&mut s, model, ops_y);
    // Vertical markers over everything below the axis.
    let top = AXIS_H;
    let bottom = height - 4.0;
    for (at, kind, text) in thin_markers(&model.markers, scale) {
        let x = scale.x(at);
        writeln!(
            s,
            "<line class=\"mk-{kind}\" x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"><title>{} at {}</title></line>",
            esc(&text),
            format_ns(at)
        ).expect("writing to a String cannot fail");
    }
    if info.failed {
        let x = scale.x(model.end_ns);
        let violation = info.violation.as_deref().unwrap_or("the run failed");
        for t in cited_times(violation, model.end_ns) {
            let xc = scale.x(t);
            writeln!(
                s,
                "<line class=\"cited\" x1=\"{xc:.1}\" y1=\"{top}\" x2=\"{xc:.1}\" y2=\"{bottom:.1}\"><title>cited by the violation: {}</title></line>",
                format_ns(t)
            ).expect("writing to a String cannot fail");
        }
        writeln!(
            s,
            "<line class=\"failure\" x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"><title>failure at {}: {}</title></line>",
            format_ns(model.end_ns),
            esc(violation)
        ).expect("writing to a String cannot fail");
        let text = format!("✗ failure at {}: {violation}", format_ns(model.end_ns));
        writeln!(
            s,
            "<rect x=\"{PLOT_X}\" y=\"{:.1}\" width=\"{PLOT_W}\" height=\"{:.1}\" fill=\"#fff\"/>",
            AXIS_H + 1.0,
            FAILURE_ROW_H - 2.0
        )
        .expect("writing to a String cannot fail");
        writeln!(
            s,
            "<text class=\"failure-text\" x=\"{PLOT_X}\" y=\"{:.1}\">{}<title>{}</title></text>",
            AXIS_H + 14.0,
            esc(&clip(&text, (PLOT_W / 6.8) as usize)),
            esc(&text)
        )
        .expect("writing to a String cannot fail");
    }
    s.push_str("</svg>\n");
    s
}

fn axis(s: &mut String, scale: &Scale, height: f64) {
    // A step of 1, 2 or 5 times a power of ten, for at most about 12 ticks.
    let mut step: u64 = 1;
    'find: loop {
        for m in [1, 2, 5] {
            let candidate = step.saturating_mul(m);
            if scale.end_ns / candidate <= 12 {
                step = candidate;
                break 'find;
            }
        }
        step = step.saturating_mul(10);
    }
    let mut t = 0;
    while t <= scale.end_ns {
        let x = scale.x(t);
        writeln!(
            s,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            AXIS_H - 6.0,
            height - 4.0,
            AXIS_H - 10.0,
            format_ns(t)
        ).expect("writing to a String cannot fail");
        t += step;
    }
}

/// Greedy interval colouring of partition spans into at most `NET_LEVELS_MAX` rows:
/// (row, crowded), crowded when the span had to overlap another (no text then).
fn net_levels(spans: &[Span], scale: &Scale) -> Vec<(usize, bool)> {
    let mut level_end: Vec<f64> = Vec::new();
    spans
        .iter()
        .map(|s| {
            let x0 = scale.x(s.start_ns);
            let x1 = scale.x(s.end_ns).max(x0 + 1.0);
            let free = level_end.iter().position(|&end| end <= x0);
            let (level, crowded) = match free {
                Some(level) => (level, false),
                None if level_end.len() < NET_LEVELS_MAX => {
                    level_end.push(0.0);
                    (level_end.len() - 1, false)
                }
                // Full: the row that frees up first.
                None => (
                    level_end
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(i, _)| i),
                    true,
                ),
            };
            level_end[level] = level_end[level].max(x1);
            (level, crowded)
        })
        .collect()
}

/// Vertical markers, at most one per kind per pixel (merged ones say how many).
fn thin_markers(
    markers: &[(u64, &'static str, String)],
    scale: &Scale,
) -> Vec<(u64, &'static str, String)> {
    let mut last: BTreeMap<&'static str, (i64, usize)> = BTreeMap::new();
    let mut out: Vec<(u64, &'static str, String)> = Vec::new();
    for (at, kind, text) in markers {
        let px = scale.x(*at) as i64;
        match last.get(kind) {
            Some(&(p, index)) if p == px => {
                out[index].2.push_str(&format!("; {text}"));
            }
            _ => {
                last.insert(kind, (px, out.len()));
                out.push((*at, kind, text.clone()));
            }
        }
    }
    out
}

fn lane_svg(s: &mut String, id: u64, lane: &Lane, y: f64, scale: &Scale) {
    let label = if lane.server || lane.ops.is_empty() {
        format!("n{id}")
    } else {
        format!("n{id} client")
    };
    writeln!(
        s,
        "<rect class=\"lane-bg\" x=\"{PLOT_X}\" y=\"{y:.1}\" width=\"{PLOT_W}\" height=\"{:.1}\"/><text class=\"lane-label\" x=\"4\" y=\"{:.1}\">{label}</text>",
        LANE_H - 2.0,
        y + 14.0
    ).expect("writing to a String cannot fail");
    for seg in merge_segments(&lane.segments, scale) {
        let x0 = scale.x(seg.start_ns);
        let w = scale.x(seg.end_ns) - x0;
        if seg.band.life == Life::Absent {
            continue;
        }
        let title = format!(
            "n{id}: {} ({} – {}){}",
            seg.band.describe(),
            format_ns(seg.start_ns),
            format_ns(seg.end_ns),
            if seg.note.is_empty() {
                String::new()
            } else {
                format!("\n{}", seg.note)
            }
        );
        write!(
            s,
            "<rect class=\"{}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{BAND_H}\"><title>{}</title></rect>",
            seg.band.class(),
            esc(&title)
        ).expect("writing to a String cannot fail");
        let label = match (seg.band.life, seg.band.term) {
            (Life::Down, _) => "crashed".to_string(),
            (Life::Stopped, _) => "fail-stop".to_string(),
            (Life::Paused, Some(t)) => format!("paused T{t}"),
            (Life::Paused, None) => "paused".to_string(),
            (Life::Up, Some(t)) => format!("T{t}"),
            _ => String::new(),
        };
        if !label.is_empty() && w >= label.chars().count() as f64 * 6.6 + 4.0 {
            let dark = matches!(seg.band.life, Life::Stopped)
                || (seg.band.life == Life::Up && seg.band.role == Role::Leader);
            write!(
                s,
                "<text class=\"band-text{}\" x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
                if dark { " on-dark" } else { "" },
                x0 + 3.0,
                y + 14.0
            )
            .expect("writing to a String cannot fail");
        }
        s.push('\n');
    }
    // Operations: three thin rows under the band.
    let ops_y = y + BAND_H + 1.0;
    for (row, op) in [Op::Invoke, Op::Ok, Op::Fail].into_iter().enumerate() {
        let times: Vec<u64> = lane
            .ops
            .iter()
            .filter(|(_, o)| *o == op)
            .map(|(t, _)| *t)
            .collect();
        let class = match op {
            Op::Invoke => "op-invoke",
            Op::Ok => "op-ok",
            Op::Fail => "op-fail",
        };
        let name = match op {
            Op::Invoke => "invoked",
            Op::Ok => "succeeded",
            Op::Fail => "failed",
        };
        for (x0, x1, n, t0, t1) in runs(&times, scale, TICK_BUCKET_PX) {
            write!(
                s,
                "<rect class=\"{class}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"3\"><title>n{id}: {n} operation(s) {name}, {} – {}</title></rect>",
                ops_y + row as f64 * 3.5,
                (x1 - x0).max(1.0),
                format_ns(t0),
                format_ns(t1)
            ).expect("writing to a String cannot fail");
        }
    }
    // Glyphs, bucketed per kind.
    let mut by_kind: BTreeMap<MarkKind, Vec<&Mark>> = BTreeMap::new();
    for m in &lane.marks {
        by_kind.entry(m.kind).or_default().push(m);
    }
    for (kind, marks) in by_kind {
        let mut bucket: Option<(i64, Vec<&Mark>)> = None;
        let flush = |s: &mut String, group: &[&Mark]| {
            let first = group[0];
            let x = scale.x(first.at_ns);
            let text = group
                .iter()
                .take(5)
                .map(|m| format!("{}: {}", format_ns(m.at_ns), clip(&m.text, 200)))
                .collect::<Vec<_>>()
                .join("\n");
            let more = if group.len() > 5 {
                format!("\n… and {} more", group.len() - 5)
            } else {
                String::new()
            };
            let title = format!("n{id} {}:\n{text}{more}", kind.name());
            glyph(s, kind, x, y + BAND_H / 2.0, &title);
        };
        for m in marks {
            let b = (scale.x(m.at_ns) / MARK_BUCKET_PX) as i64;
            match &mut bucket {
                Some((cur, group)) if *cur == b => group.push(m),
                _ => {
                    if let Some((_, group)) = bucket.take() {
                        flush(s, &group);
                    }
                    bucket = Some((b, vec![m]));
                }
            }
        }
        if let Some((_, group)) = bucket {
            flush(s, &group);
        }
    }
}

fn glyph(s: &mut String, kind: MarkKind, x: f64, cy: f64, title: &str) {
    let class = kind.class();
    let title = esc(title);
    let shape = match kind {
        MarkKind::Backup | MarkKind::BackupDone | MarkKind::BackupFailed => format!(
            "<path class=\"{class}\" d=\"M{x:.1} {:.1} l5 6 l-5 6 l-5 -6 z\" stroke=\"#fff\" stroke-width=\"0.8\">",
            cy - 6.0
        ),
        MarkKind::Snapshot => format!(
            "<path class=\"{class}\" d=\"M{x:.1} {:.1} l4 8 l-8 0 z\">",
            cy - 4.0
        ),
        MarkKind::Conf => {
            format!("<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{cy:.1}\" r=\"3.5\">")
        }
        MarkKind::StartFailed => format!(
            "<path class=\"{class}\" d=\"M{:.1} {:.1} l7 7 m0 -7 l-7 7\" stroke=\"#e53e3e\" stroke-width=\"2\">",
            x - 3.5,
            cy - 3.5
        ),
        MarkKind::Skipped => format!(
            "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{cy:.1}\" r=\"4\" stroke-width=\"1.5\">"
        ),
        MarkKind::NodeFault => format!(
            "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\">",
            x - 3.0,
            cy - 3.0
        ),
    };
    let close = match kind {
        MarkKind::Conf | MarkKind::Skipped => "</circle>",
        MarkKind::NodeFault => "</rect>",
        _ => "</path>",
    };
    write!(s, "{shape}<title>{title}</title>{close}").expect("writing to a String cannot fail");
}

/// Sorted times as merged pixel runs: (x0, x1, count, first time, last time).
fn runs(times: &[u64], scale: &Scale, bucket_px: f64) -> Vec<(f64, f64, u64, u64, u64)> {
    let mut out: Vec<(f64, f64, u64, u64, u64)> = Vec::new();
    for &t in times {
        let x = scale.x(t);
        let bx = (x / bucket_px).floor() * bucket_px;
        match out.last_mut() {
            Some(run) if bx <= run.1 => {
                run.1 = run.1.max(bx + bucket_px);
                run.2 += 1;
                run.4 = t;
            }
            _ => out.push((bx, bx + bucket_px, 1, t, t)),
        }
    }
    out
}

/// Merge runs of segments narrower than `MIN_SEGMENT_PX` into one; the merged one
/// shows the most severe state it covers. A wide segment is drawn as it is.
fn merge_segments(segments: &[Segment], scale: &Scale) -> Vec<Segment> {
    let min_ns = (scale.ns_per_px() * MIN_SEGMENT_PX) as u64;
    let mut out: Vec<Segment> = Vec::new();
    let mut acc: Option<(Segment, u64)> = None; // (merged, how many)
    let note = |n: u64| format!("{n} states merged at this zoom; most severe shown");
    for seg in segments {
        let wide = seg.end_ns - seg.start_ns >= min_ns;
        match acc.take() {
            None if wide => out.push(seg.clone()),
            None => acc = Some((seg.clone(), 1)),
            // A wide segment is never swallowed: the narrow run before it ends there.
            Some((mut merged, n)) if wide => {
                if n > 1 {
                    merged.note = note(n);
                }
                out.push(merged);
                out.push(seg.clone());
            }
            Some((mut merged, n)) => {
                merged.end_ns = seg.end_ns;
                if seg.band.severity() > merged.band.severity() {
                    merged.band = seg.band;
                }
                let n = n + 1;
                if merged.end_ns - merged.start_ns >= min_ns {
                    merged.note = note(n);
                    out.push(merged);
                } else {
                    acc = Some((merged, n));
                }
            }
        }
    }
    if let Some((mut merged, n)) = acc {
        if n > 1 {
            merged.note = note(n);
        }
        out.push(merged);
    }
    out
}

fn ops_lane(s: &mut String, model: &Model, y: f64) {
    writeln!(
        s,
        "<rect class=\"lane-bg\" x=\"{PLOT_X}\" y=\"{y:.1}\" width=\"{PLOT_W}\" height=\"{OPS_LANE_H}\"/><text class=\"lane-label\" x=\"4\" y=\"{:.1}\">operations</text><text x=\"4\" y=\"{:.1}\">per {}</text>",
        y + 14.0,
        y + 28.0,
        format_ns(model.end_ns / OPS_BUCKETS as u64)
    ).expect("writing to a String cannot fail");
    let mut counts = vec![[0u64; 3]; OPS_BUCKETS];
    let all = model
        .lanes
        .values()
        .flat_map(|l| l.ops.iter())
        .chain(model.world_ops.iter());
    for (t, op) in all {
        let b = ((*t as u128 * OPS_BUCKETS as u128) / (model.end_ns as u128 + 1)) as usize;
        counts[b.min(OPS_BUCKETS - 1)][*op as usize] += 1;
    }
    let max = counts
        .iter()
        .map(|c| c[0].max(c[1] + c[2]))
        .max()
        .unwrap_or(0)
        .max(1);
    let bucket_w = PLOT_W / OPS_BUCKETS as f64;
    let bucket_ns = model.end_ns / OPS_BUCKETS as u64;
    let h = OPS_LANE_H - 4.0;
    for (i, [invoked, ok, failed]) in counts.iter().copied().enumerate() {
        if invoked + ok + failed == 0 {
            continue;
        }
        let x = PLOT_X + i as f64 * bucket_w;
        let half = bucket_w / 2.0 - 0.3;
        let bottom = y + OPS_LANE_H;
        let title = format!(
            "{} – {}: {invoked} invoked, {ok} ok, {failed} failed",
            format_ns(i as u64 * bucket_ns),
            format_ns((i as u64 + 1) * bucket_ns)
        );
        let hi = h * invoked as f64 / max as f64;
        let ho = h * ok as f64 / max as f64;
        let hf = h * failed as f64 / max as f64;
        writeln!(
            s,
            "<g><title>{title}</title><rect class=\"op-invoke\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{half:.1}\" height=\"{hi:.1}\"/><rect class=\"op-ok\" x=\"{:.1}\" y=\"{:.1}\" width=\"{half:.1}\" height=\"{ho:.1}\"/><rect class=\"op-fail\" x=\"{:.1}\" y=\"{:.1}\" width=\"{half:.1}\" height=\"{hf:.1}\"/></g>",
            bottom - hi,
            x + half,
            bottom - ho,
            x + half,
            bottom - ho - hf
        ).expect("writing to a String cannot fail");
    }
    writeln!(s, "<text x=\"4\" y=\"{:.1}\">(max {max})</text>", y + 42.0)
        .expect("writing to a String cannot fail");
}
