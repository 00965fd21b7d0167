//! `meshctl graph`: the DOT and mermaid text of the reference inventory and of a two-site one
//! (snapshots), the SVG of both rendered to PNG by a real SVG renderer (resvg) so a broken SVG
//! fails, a plan's marks, and the command drawing without contacting any host.

mod support;

use support::core::{ALL_HOST_KEYS, Fixture, edit, repo_text};

/// inventory/example.yaml with a second site (gateway `nas2` behind router `speedport`), the
/// way tests/e2e_variants.rs makes one.
fn two_sites() -> Fixture {
    let text = repo_text("inventory/example.yaml");
    let text = edit(
        &text,
        "  laptop:\n    role: client",
        "  nas2:\n    role: gateway\n    ssh: root@nas2\n    address: 10.8.0.3\n    keepalive: 4\n    lan:\n      subnet: 192.168.50.0/24\n      interface: eth1\n      address: 192.168.50.10\n  laptop:\n    role: client",
    );
    let text = edit(
        &text,
        "    gateway: nas\n",
        "    gateway: nas\n  speedport:\n    lan: 192.168.50.0/24\n    address: 192.168.50.1\n    gateway: nas2\n",
    );
    Fixture::new("sites.yaml", &text, &ALL_HOST_KEYS, None)
}

fn example() -> Fixture {
    Fixture::repo("example.yaml", &ALL_HOST_KEYS)
}

#[test]
fn dot_and_mermaid_of_the_reference_and_two_sites() {
    for (name, fx) in [("example", example()), ("sites", two_sites())] {
        let m = meshctl::graph::model(&fx.inputs.inventory, None);
        insta::assert_snapshot!(format!("{name}_dot"), meshctl::graph::dot(&m));
        insta::assert_snapshot!(format!("{name}_mermaid"), meshctl::graph::mermaid(&m));
    }
}

/// Renders `svg` with resvg (system fonts: Debian's DejaVu) and returns the PNG's bytes and the
/// number of non-white pixels.
fn render_png(svg: &str) -> (Vec<u8>, usize, (u32, u32)) {
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    assert!(
        !opt.fontdb.is_empty(),
        "no system fonts for the SVG's text: install fonts-dejavu-core (ci/install does)"
    );
    let tree = resvg::usvg::Tree::from_str(svg, &opt).expect("the SVG parses");
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).expect("a canvas");
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    let inked = pixmap
        .pixels()
        .iter()
        .filter(|p| (p.red(), p.green(), p.blue()) != (255, 255, 255))
        .count();
    (
        pixmap.encode_png().expect("PNG"),
        inked,
        (size.width(), size.height()),
    )
}

#[test]
fn the_svg_renders_to_a_png() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (name, fx) in [("example", example()), ("sites", two_sites())] {
        let m = meshctl::graph::model(&fx.inputs.inventory, None);
        let svg = meshctl::graph::svg(&m);
        // Every host, LAN and router has its box, and its name is drawn.
        for n in &m.nodes {
            assert!(
                svg.contains(&format!("<g id=\"{}\">", n.id)),
                "{name}: {}",
                n.id
            );
            assert!(
                svg.contains(&format!(">{}</text>", n.title)),
                "{name}: {}",
                n.title
            );
        }
        let (png, inked, (w, h)) = render_png(&svg);
        assert!(w > 400 && h > 300, "{name}: {w}x{h}");
        // Boxes, lines and text cover a good part of the canvas, not a blank page.
        assert!(
            inked > (w * h / 20) as usize,
            "{name}: only {inked} pixels drawn"
        );
        let out = dir.join(format!("graph-{name}.png"));
        std::fs::write(&out, png).unwrap();
        eprintln!("wrote {}", out.display());
    }
}

#[test]
fn svg_text_is_escaped() {
    // The inventory allowlists names, so the model is given an odd title directly: whatever
    // reaches a renderer is escaped there.
    let fx = example();
    let mut m = meshctl::graph::model(&fx.inputs.inventory, None);
    m.title = "a<b & 'c\"".into();
    let svg = meshctl::graph::svg(&m);
    assert!(svg.contains("network a&lt;b &amp; &apos;c&quot;"), "{svg}");
    render_png(&svg);
    let dot = meshctl::graph::dot(&m);
    assert!(dot.contains("graph \"a<b & 'c\\\"\" {"), "{dot}");
    let mermaid = meshctl::graph::mermaid(&m);
    assert!(
        mermaid.contains("network a#lt;b #amp; 'c#quot;"),
        "{mermaid}"
    );
}

#[test]
fn a_plan_colours_the_hosts_it_would_change() {
    use meshctl::plan::{HostStatus, Plan};
    let fx = example();
    let desired = fx.desired();
    // The hub converged, the NAS fresh (changes), the laptop not gathered.
    let live: std::collections::BTreeMap<_, _> = desired
        .iter()
        .map(|(h, d)| {
            let r = match h.as_str() {
                "vps" => Ok(support::core::converged("vps", d)),
                "nas" => Ok(support::core::fresh("nas")),
                _ => Err("ssh: connection refused".to_string()),
            };
            (h.clone(), r)
        })
        .collect();
    let plan: Plan = meshctl::planner::build(&fx.inputs, &desired, &live);
    assert!(plan.hosts.iter().any(|h| h.status == HostStatus::Failed));
    let m = meshctl::graph::model(&fx.inputs.inventory, Some(&plan));
    let line = |host: &str| {
        let n = m.nodes.iter().find(|n| n.title == host).unwrap();
        n.lines.last().unwrap().clone()
    };
    assert_eq!(line("vps"), "plan: in sync");
    assert!(line("nas").starts_with("plan: +"), "{}", line("nas"));
    assert_eq!(line("laptop"), "plan: could not gather");
    assert!(
        line("phone").starts_with("unmanaged"),
        "the phone is not gathered"
    );
    let svg = meshctl::graph::svg(&m);
    for colour in ["#16a34a", "#ea580c", "#dc2626"] {
        assert!(svg.contains(colour), "{colour}");
    }
    render_png(&svg);
    let dot = meshctl::graph::dot(&m);
    assert!(dot.contains("color=\"#ea580c\", penwidth=3"), "{dot}");
}

#[test]
fn the_command_draws_without_contacting_any_host() {
    let fx = example();
    let out_dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_meshctl");
    // The example's ssh targets do not resolve: drawing must not try them.
    for (file, head) in [
        ("net.svg", "<svg "),
        ("net.dot", "graph \"home\" {"),
        ("net.mmd", "flowchart TB"),
    ] {
        let path = out_dir.path().join(file);
        let out = std::process::Command::new(bin)
            .args(["graph", "-i"])
            .arg(&fx.path)
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(head), "{file}: {text}");
    }
    let out = std::process::Command::new(bin)
        .args(["graph", "--format", "mermaid", "-i"])
        .arg(&fx.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("flowchart TB"));
}
