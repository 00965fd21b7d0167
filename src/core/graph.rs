//! `meshctl graph`: the network as a picture — the hosts by role, the tunnels to the hub, each
//! gateway's home LAN, the routers with their manual routes, the address ranges, and which hosts
//! are unmanaged — as Graphviz DOT, mermaid, or an SVG drawn here (a hub-and-spoke layout: no
//! Graphviz needed). Pure: it reads a validated inventory and, for `--plan`, a [`Plan`] made by
//! the engine, and decides nothing about the network itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::inventory::{Inventory, Ipv6Mode, Role, Tunnel};
use crate::keys::PinnedKeys;
use crate::plan::{HostStatus, Plan};

/// What a node is; picks its colour and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The hub every host peers with.
    Hub,
    /// A gateway into a home LAN.
    Gateway,
    /// A roaming client.
    Client,
    /// A gateway's home LAN.
    Lan,
    /// An unmanaged home router.
    Router,
}

/// What the plan (with `--plan`) says about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// Gathered, nothing would change.
    InSync,
    /// Changes pending: `+add ~change -remove`.
    Changes {
        /// Resources to add.
        add: usize,
        /// Resources to change.
        change: usize,
        /// Resources to remove.
        remove: usize,
    },
    /// The host could not be gathered.
    Failed,
}

/// One box of the picture.
#[derive(Debug, Clone)]
pub struct Node {
    /// A stable id (`host:vps`, `lan:nas`, `router:fritzbox`), unique in the picture.
    pub id: String,
    /// What it is.
    pub kind: Kind,
    /// The first, bold line (a name).
    pub title: String,
    /// Further lines (addresses, settings, the plan's word).
    pub lines: Vec<String>,
    /// Whether meshctl applies to it itself (hosts with `ssh:`); LANs count as managed.
    pub managed: bool,
    /// The plan's mark, only with `--plan` and only for gathered hosts.
    pub mark: Option<Mark>,
}

/// How two nodes are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// A WireGuard tunnel to the hub.
    Tunnel,
    /// A gateway's leg on its home LAN.
    Lan,
    /// A router on its LAN.
    Router,
}

/// One line of the picture.
#[derive(Debug, Clone)]
pub struct Edge {
    /// The node it starts at.
    pub from: String,
    /// The node it ends at.
    pub to: String,
    /// What it is.
    pub kind: EdgeKind,
    /// Its label lines (may be empty).
    pub label: Vec<String>,
}

/// The picture as data: the renderers only draw it.
#[derive(Debug, Clone)]
pub struct Model {
    /// The network's name.
    pub title: String,
    /// The address ranges and shared settings, one line each.
    pub ranges: Vec<String>,
    /// Boxes: the hub first, then gateways, clients, LANs and routers.
    pub nodes: Vec<Node>,
    /// Lines between boxes.
    pub edges: Vec<Edge>,
}

fn host_id(name: &str) -> String {
    format!("host:{name}")
}

fn lan_id(gateway: &str) -> String {
    format!("lan:{gateway}")
}

fn router_id(name: &str) -> String {
    format!("router:{name}")
}

/// The plan's mark per host name.
fn marks(plan: &Plan) -> BTreeMap<String, Mark> {
    plan.hosts
        .iter()
        .map(|hp| {
            let mark = if hp.status == HostStatus::Failed {
                Mark::Failed
            } else {
                let c = hp.counts();
                if c.total() == 0 {
                    Mark::InSync
                } else {
                    Mark::Changes {
                        add: c.add,
                        change: c.change,
                        remove: c.remove,
                    }
                }
            };
            (hp.host.to_string(), mark)
        })
        .collect()
}

fn mark_line(m: &Mark) -> String {
    match m {
        Mark::InSync => "plan: in sync".into(),
        Mark::Changes {
            add,
            change,
            remove,
        } => format!("plan: +{add} ~{change} -{remove}"),
        Mark::Failed => "plan: could not gather".into(),
    }
}

/// Builds the picture of `inv`; with `plan`, each gathered host carries the plan's mark.
pub fn model(inv: &Inventory, plan: Option<&Plan>) -> Model {
    let marks = plan.map(marks).unwrap_or_default();
    let net = &inv.network;
    let mut ranges = vec![format!("IPv4 {} on {}", net.ipv4, net.interface)];
    if let Some(v6) = &net.ipv6 {
        let mode = match v6.mode {
            Ipv6Mode::OnLink => "on-link",
            Ipv6Mode::Routed => "routed",
        };
        ranges.push(format!(
            "IPv6 {} ({mode}), clients {}",
            v6.prefix, v6.clients
        ));
    }
    for (gw, lan) in inv.lans() {
        let mut s = format!("LAN {} behind {}", lan.subnet, gw.name);
        if let Some(p) = lan.ipv6_prefix {
            let _ = write!(s, ", {p}");
        }
        ranges.push(s);
    }
    let mut settings = vec![format!("port {}", net.listen_port)];
    if let Some(m) = net.mtu {
        settings.push(format!("MTU {m}"));
    }
    if !net.dns.is_empty() {
        let dns: Vec<String> = net.dns.iter().map(ToString::to_string).collect();
        settings.push(format!("DNS {}", dns.join(", ")));
    }
    ranges.push(settings.join(" · "));

    let (hub, _) = inv.hub();
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let mut hosts: Vec<_> = inv.hosts.values().collect();
    // The hub first, then gateways, then clients: the order the layout places them in.
    hosts.sort_by_key(|h| {
        (
            match h.role {
                Role::Hub(_) => 0,
                Role::Gateway(_) => 1,
                Role::Client(_) => 2,
            },
            h.name.clone(),
        )
    });
    for h in hosts {
        let mut lines = vec![format!("{} · {}", h.role.name(), h.address)];
        if let Some(a) = h.ipv6 {
            lines.push(a.to_string());
        }
        match &h.role {
            Role::Hub(r) => {
                lines.push(format!("endpoint {}:{}", r.endpoint, net.listen_port));
                lines.push(format!(
                    "WAN {}{}",
                    r.wan_interface,
                    if r.nat { " · NAT" } else { "" }
                ));
            }
            Role::Client(c) => lines.push(
                match c.tunnel {
                    Tunnel::Split => "split tunnel",
                    Tunnel::Full => "full tunnel",
                }
                .into(),
            ),
            Role::Gateway(_) => {}
        }
        match &h.ssh {
            Some(t) => lines.push(format!("ssh {t}")),
            None => lines.push(format!("unmanaged: meshctl client {}", h.name)),
        }
        let mark = marks.get(h.name.as_str()).cloned();
        if let Some(m) = &mark {
            lines.push(mark_line(m));
        }
        nodes.push(Node {
            id: host_id(h.name.as_str()),
            kind: match h.role {
                Role::Hub(_) => Kind::Hub,
                Role::Gateway(_) => Kind::Gateway,
                Role::Client(_) => Kind::Client,
            },
            title: h.name.to_string(),
            lines,
            managed: h.is_managed(),
            mark,
        });
        if h.name == hub.name {
            continue;
        }
        let mut label = Vec::new();
        match &h.role {
            Role::Gateway(g) => label.push(format!("carries {}", g.lan.subnet)),
            Role::Client(c) if c.tunnel == Tunnel::Full => label.push("0.0.0.0/0".into()),
            _ => {}
        }
        if let Some(k) = h.keepalive {
            label.push(format!("keepalive {k} s"));
        }
        edges.push(Edge {
            from: host_id(h.name.as_str()),
            to: host_id(hub.name.as_str()),
            kind: EdgeKind::Tunnel,
            label,
        });
    }
    for (gw, lan) in inv.lans() {
        let mut lines = Vec::new();
        if let Some(p) = lan.ipv6_prefix {
            lines.push(p.to_string());
        }
        lines.push(format!(
            "{} on {} · {}",
            gw.name, lan.interface, lan.address
        ));
        if let Some(a) = lan.ipv6_address {
            lines.push(a.to_string());
        }
        nodes.push(Node {
            id: lan_id(gw.name.as_str()),
            kind: Kind::Lan,
            title: format!("LAN {}", lan.subnet),
            lines,
            managed: true,
            mark: None,
        });
        edges.push(Edge {
            from: host_id(gw.name.as_str()),
            to: lan_id(gw.name.as_str()),
            kind: EdgeKind::Lan,
            label: vec![lan.interface.to_string()],
        });
    }
    // The routers' manual steps, as the plan prints them, shortened to the route itself.
    let steps = crate::planner::manual_steps(inv, &PinnedKeys::default());
    for r in inv.routers.values() {
        let mut lines = vec![format!("router (unmanaged) · {}", r.address)];
        for s in steps.iter().filter(|s| s.subject == r.name.as_str()) {
            let text = s.text.trim_start_matches("add the static ");
            let text = text.split(" (").next().unwrap_or(text);
            lines.push(format!("manual: {text}"));
        }
        nodes.push(Node {
            id: router_id(r.name.as_str()),
            kind: Kind::Router,
            title: r.name.to_string(),
            lines,
            managed: false,
            mark: None,
        });
        edges.push(Edge {
            from: router_id(r.name.as_str()),
            to: lan_id(r.gateway.as_str()),
            kind: EdgeKind::Router,
            label: Vec::new(),
        });
    }
    Model {
        title: net.name.clone(),
        ranges,
        nodes,
        edges,
    }
}

fn fill(kind: Kind) -> &'static str {
    match kind {
        Kind::Hub => "#dbeafe",
        Kind::Gateway => "#dcfce7",
        Kind::Client => "#fef9c3",
        Kind::Lan => "#f3f4f6",
        Kind::Router => "#fce7f3",
    }
}

fn mark_colour(m: &Mark) -> &'static str {
    match m {
        Mark::InSync => "#16a34a",
        Mark::Changes { .. } => "#ea580c",
        Mark::Failed => "#dc2626",
    }
}

/// A DOT double-quoted string's content (backslash and quote escaped; lines joined by `\n`).
fn dot_str(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| {
            l.chars()
                .flat_map(|c| match c {
                    '\\' => vec!['\\', '\\'],
                    '"' => vec!['\\', '"'],
                    '\n' | '\r' => vec![' '],
                    c => vec![c],
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\\n")
}

/// One line as a DOT double-quoted string's content.
fn dot_one(s: &str) -> String {
    dot_str(&[s.to_owned()])
}

/// Graphviz DOT (`dot -Tsvg`), undirected.
pub fn dot(m: &Model) -> String {
    let mut out = String::new();
    let mut title = vec![format!("network {}", m.title)];
    title.extend(m.ranges.iter().cloned());
    let _ = writeln!(out, "graph \"{}\" {{", dot_one(&m.title));
    let _ = writeln!(out, "  label=\"{}\";", dot_str(&title));
    out.push_str("  labelloc=t;\n  layout=neato;\n  overlap=false;\n");
    out.push_str("  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];\n");
    for n in &m.nodes {
        let mut label = vec![n.title.clone()];
        label.extend(n.lines.iter().cloned());
        let mut style = vec!["filled"];
        if n.kind != Kind::Lan {
            style.push("rounded");
        }
        if !n.managed {
            style.push("dashed");
        }
        let shape = match n.kind {
            Kind::Lan => "folder",
            Kind::Router => "box3d",
            _ => "box",
        };
        let mut attrs = format!(
            "label=\"{}\", shape={shape}, style=\"{}\", fillcolor=\"{}\"",
            dot_str(&label),
            style.join(","),
            fill(n.kind)
        );
        if let Some(mk) = &n.mark {
            let _ = write!(attrs, ", color=\"{}\", penwidth=3", mark_colour(mk));
        }
        let _ = writeln!(out, "  \"{}\" [{attrs}];", dot_one(&n.id));
    }
    for e in &m.edges {
        let style = match e.kind {
            EdgeKind::Tunnel => "bold",
            EdgeKind::Lan => "solid",
            EdgeKind::Router => "dashed",
        };
        let _ = write!(
            out,
            "  \"{}\" -- \"{}\" [style={style}",
            dot_one(&e.from),
            dot_one(&e.to)
        );
        if !e.label.is_empty() {
            let _ = write!(out, ", label=\"{}\"", dot_str(&e.label));
        }
        out.push_str("];\n");
    }
    out.push_str("}\n");
    out
}

/// A mermaid label's text: entity codes for what mermaid or HTML would read.
fn mermaid_str(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '#' => out.push_str("#35;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A mermaid node id: the model's id with `:` and `-` (never in host names as `_`) as `_`.
fn mermaid_id(id: &str) -> String {
    id.replace([':', '-'], "_")
}

/// A mermaid flowchart (GitHub renders it inside a ```mermaid block).
pub fn mermaid(m: &Model) -> String {
    let mut out = String::from("flowchart TB\n");
    let mut title = vec![format!("<b>network {}</b>", mermaid_str(&m.title))];
    title.extend(m.ranges.iter().map(|r| mermaid_str(r)));
    let _ = writeln!(out, "  ranges[\"{}\"]", title.join("<br/>"));
    for n in &m.nodes {
        let mut label = vec![format!("<b>{}</b>", mermaid_str(&n.title))];
        label.extend(n.lines.iter().map(|l| mermaid_str(l)));
        let (open, close) = match n.kind {
            Kind::Hub => ("((", "))"),
            Kind::Lan => ("[/", "/]"),
            Kind::Router => ("[[", "]]"),
            _ => ("(", ")"),
        };
        let _ = writeln!(
            out,
            "  {}{open}\"{}\"{close}",
            mermaid_id(&n.id),
            label.join("<br/>")
        );
    }
    for e in &m.edges {
        let link = match e.kind {
            EdgeKind::Tunnel => "===",
            EdgeKind::Lan => "---",
            EdgeKind::Router => "-.-",
        };
        let label = if e.label.is_empty() {
            String::new()
        } else {
            let l: Vec<String> = e.label.iter().map(|l| mermaid_str(l)).collect();
            format!("|\"{}\"|", l.join("<br/>"))
        };
        let _ = writeln!(
            out,
            "  {} {link}{label} {}",
            mermaid_id(&e.from),
            mermaid_id(&e.to)
        );
    }
    for (kind, name) in [
        (Kind::Hub, "hub"),
        (Kind::Gateway, "gateway"),
        (Kind::Client, "client"),
        (Kind::Lan, "lan"),
        (Kind::Router, "router"),
    ] {
        let _ = writeln!(out, "  classDef {name} fill:{}", fill(kind));
        let ids: Vec<String> = m
            .nodes
            .iter()
            .filter(|n| n.kind == kind)
            .map(|n| mermaid_id(&n.id))
            .collect();
        if !ids.is_empty() {
            let _ = writeln!(out, "  class {} {name}", ids.join(","));
        }
    }
    let unmanaged: Vec<String> = m
        .nodes
        .iter()
        .filter(|n| !n.managed)
        .map(|n| mermaid_id(&n.id))
        .collect();
    if !unmanaged.is_empty() {
        let _ = writeln!(out, "  classDef unmanaged stroke-dasharray:5 5");
        let _ = writeln!(out, "  class {} unmanaged", unmanaged.join(","));
    }
    for n in &m.nodes {
        if let Some(mk) = &n.mark {
            let _ = writeln!(
                out,
                "  style {} stroke:{},stroke-width:3px",
                mermaid_id(&n.id),
                mark_colour(mk)
            );
        }
    }
    out
}

/// Text escaped for SVG (XML) content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

const LINE: f64 = 16.0;
const CHAR: f64 = 7.4;
const PAD: f64 = 10.0;

/// A box placed on the canvas: centre and size.
#[derive(Debug, Clone, Copy)]
struct Placed {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

fn size(n: &Node) -> (f64, f64) {
    let longest = std::iter::once(&n.title)
        .chain(&n.lines)
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let w = (longest as f64 * CHAR + 2.0 * PAD).max(120.0);
    let h = (n.lines.len() + 1) as f64 * LINE + 2.0 * PAD;
    (w, h)
}

/// The hub-and-spoke layout: the hub in the centre, the other hosts on a circle around it,
/// each gateway's LAN further out on its spoke, and the LAN's routers beside the LAN.
fn layout(m: &Model) -> BTreeMap<String, Placed> {
    let mut at = BTreeMap::new();
    let spokes: Vec<&Node> = m
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, Kind::Gateway | Kind::Client))
        .collect();
    for n in m.nodes.iter().filter(|n| n.kind == Kind::Hub) {
        let (w, h) = size(n);
        at.insert(
            n.id.clone(),
            Placed {
                x: 0.0,
                y: 0.0,
                w,
                h,
            },
        );
    }
    let count = spokes.len().max(1) as f64;
    // Gateways come first and start at the top, where their LAN has room.
    let radius = 260.0_f64.max(count * 55.0);
    for (i, n) in spokes.iter().enumerate() {
        let angle = -std::f64::consts::FRAC_PI_2 + i as f64 * std::f64::consts::TAU / count;
        let (w, h) = size(n);
        let (dx, dy) = (angle.cos(), angle.sin());
        at.insert(
            n.id.clone(),
            Placed {
                x: dx * radius * 1.3,
                y: dy * radius,
                w,
                h,
            },
        );
        if n.kind != Kind::Gateway {
            continue;
        }
        let lan = lan_id(n.title.as_str());
        let Some(lan_node) = m.nodes.iter().find(|x| x.id == lan) else {
            continue;
        };
        let (lw, lh) = size(lan_node);
        let (lx, ly) = (dx * (radius + 190.0) * 1.3, dy * (radius + 190.0));
        at.insert(
            lan.clone(),
            Placed {
                x: lx,
                y: ly,
                w: lw,
                h: lh,
            },
        );
        // Routers stand beside their LAN, perpendicular to the spoke, one after the other.
        let routers: Vec<&Edge> = m
            .edges
            .iter()
            .filter(|e| e.kind == EdgeKind::Router && e.to == lan)
            .collect();
        let mut offset = lw / 2.0 + 40.0;
        for e in routers {
            let Some(r) = m.nodes.iter().find(|x| x.id == e.from) else {
                continue;
            };
            let (rw, rh) = size(r);
            offset += rw / 2.0;
            // Perpendicular to the spoke, mostly sideways.
            let (px, py) = if dy.abs() >= dx.abs() {
                (1.0, 0.0)
            } else {
                (0.0, 1.0)
            };
            let step = if px > 0.0 {
                offset
            } else {
                lh / 2.0 + 30.0 + rh / 2.0
            };
            at.insert(
                r.id.clone(),
                Placed {
                    x: lx + px * step,
                    y: ly + py * step,
                    w: rw,
                    h: rh,
                },
            );
            offset += rw / 2.0 + 30.0;
        }
    }
    at
}

/// Where the line from `a`'s centre towards `b`'s leaves `a`'s box.
fn border(a: &Placed, b: &Placed) -> (f64, f64) {
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    let tx = if dx == 0.0 {
        f64::MAX
    } else {
        a.w / 2.0 / dx.abs()
    };
    let ty = if dy == 0.0 {
        f64::MAX
    } else {
        a.h / 2.0 / dy.abs()
    };
    let t = tx.min(ty).min(1.0);
    (a.x + dx * t, a.y + dy * t)
}

/// An SVG picture, drawn by meshctl: a hub-and-spoke layout, text escaped.
pub fn svg(m: &Model) -> String {
    let at = layout(m);
    // Bounding box of every box, then the title block above it.
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for p in at.values() {
        x0 = x0.min(p.x - p.w / 2.0);
        x1 = x1.max(p.x + p.w / 2.0);
        y0 = y0.min(p.y - p.h / 2.0);
        y1 = y1.max(p.y + p.h / 2.0);
    }
    if at.is_empty() {
        (x0, y0, x1, y1) = (0.0, 0.0, 0.0, 0.0);
    }
    let title_lines = m.ranges.len() + 1;
    let title_h = title_lines as f64 * LINE + 2.0 * PAD;
    let title_w = std::iter::once(m.title.chars().count() + 8)
        .chain(m.ranges.iter().map(|r| r.chars().count()))
        .max()
        .unwrap_or(0) as f64
        * CHAR
        + 2.0 * PAD;
    let margin = 30.0;
    let left = x0 - margin;
    let top = y0 - margin - title_h - 20.0;
    let width = (x1 - x0).max(title_w) + 2.0 * margin;
    let height = (y1 - y0) + 2.0 * margin + title_h + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"{left:.0} {top:.0} {width:.0} {height:.0}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<title>{}</title>",
        xml_escape(&format!("meshctl network {}", m.title))
    );
    let _ = writeln!(
        out,
        "<rect x=\"{left:.0}\" y=\"{top:.0}\" width=\"{width:.0}\" height=\"{height:.0}\" fill=\"#ffffff\"/>"
    );
    // The title block: the network's name and ranges.
    let (tx, ty) = (left + margin, top + margin);
    let _ = writeln!(
        out,
        "<rect x=\"{tx:.0}\" y=\"{ty:.0}\" width=\"{title_w:.0}\" height=\"{title_h:.0}\" rx=\"4\" fill=\"#f8fafc\" stroke=\"#94a3b8\"/>"
    );
    let mut lines = vec![format!("network {}", m.title)];
    lines.extend(m.ranges.iter().cloned());
    for (i, l) in lines.iter().enumerate() {
        let weight = if i == 0 { " font-weight=\"bold\"" } else { "" };
        let _ = writeln!(
            out,
            "<text x=\"{:.0}\" y=\"{:.0}\"{weight}>{}</text>",
            tx + PAD,
            ty + PAD + (i as f64 + 0.8) * LINE,
            xml_escape(l)
        );
    }
    // Lines first, so boxes cover their ends.
    for e in &m.edges {
        let (Some(a), Some(b)) = (at.get(&e.from), at.get(&e.to)) else {
            continue;
        };
        let style = match e.kind {
            EdgeKind::Tunnel => "stroke=\"#1d4ed8\" stroke-width=\"2.5\"",
            EdgeKind::Lan => "stroke=\"#15803d\" stroke-width=\"2\"",
            EdgeKind::Router => "stroke=\"#9d174d\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"",
        };
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" {style}/>",
            a.x, a.y, b.x, b.y
        );
    }
    for n in &m.nodes {
        let Some(p) = at.get(&n.id) else { continue };
        let (x, y) = (p.x - p.w / 2.0, p.y - p.h / 2.0);
        let (stroke, width) = match &n.mark {
            Some(mk) => (mark_colour(mk), 3.0),
            None => ("#475569", 1.2),
        };
        let dash = if n.managed {
            ""
        } else {
            " stroke-dasharray=\"5 3\""
        };
        let rx = if n.kind == Kind::Lan { 0 } else { 8 };
        let _ = writeln!(
            out,
            "<g id=\"{}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"{rx}\" fill=\"{}\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash}/>",
            xml_escape(&n.id),
            p.w,
            p.h,
            fill(n.kind)
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
            x + PAD,
            y + PAD + 0.8 * LINE,
            xml_escape(&n.title)
        );
        for (i, l) in n.lines.iter().enumerate() {
            let colour = match &n.mark {
                Some(mk) if l.starts_with("plan: ") => mark_colour(mk),
                _ => "#1e293b",
            };
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
                x + PAD,
                y + PAD + (i as f64 + 1.8) * LINE,
                xml_escape(l)
            );
        }
        out.push_str("</g>\n");
    }
    // Edge labels last, on a white backing, so lines and boxes do not hide them.
    for e in &m.edges {
        let (Some(a), Some(b)) = (at.get(&e.from), at.get(&e.to)) else {
            continue;
        };
        if e.label.is_empty() || e.kind != EdgeKind::Tunnel {
            continue;
        }
        // Halfway between the two boxes' borders, not their centres (a big hub box would hide it).
        let (ax, ay) = border(a, b);
        let (bx, by) = border(b, a);
        let (mx, my) = ((ax + bx) / 2.0, (ay + by) / 2.0);
        let w = e.label.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * 6.5 + 8.0;
        let h = e.label.len() as f64 * 14.0 + 4.0;
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"#ffffff\" fill-opacity=\"0.85\"/>",
            mx - w / 2.0,
            my - h / 2.0
        );
        for (i, l) in e.label.iter().enumerate() {
            let _ = writeln!(
                out,
                "<text x=\"{mx:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#1d4ed8\">{}</text>",
                my - h / 2.0 + 13.0 + i as f64 * 14.0,
                xml_escape(l)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos; "
        );
    }

    #[test]
    fn dot_and_mermaid_text_is_escaped() {
        assert_eq!(dot_str(&["a\"b\\c".into(), "d".into()]), "a\\\"b\\\\c\\nd");
        assert_eq!(mermaid_str("a\"<#>&"), "a#quot;#lt;#35;#gt;#amp;");
        assert_eq!(mermaid_id("host:my-nas"), "host_my_nas");
    }
}
