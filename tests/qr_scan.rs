//! The QR codes of `meshctl client NAME --qr` / `--qr-png FILE` scan, checked with a real
//! decoder (`zbarimg`, Debian's zbar-tools): the PNG, and the terminal output drawn the way a
//! light and a dark terminal would show it, each decoded back to the config byte for byte.
//!
//! A terminal is simulated by rasterising its character cells: a half block `▀`/`▄`/`█` or a
//! space, in the cell's foreground and background colour — the ANSI colour meshctl set, else
//! the theme's default. One cell is one module wide and two tall, as on a real terminal whose
//! cells are about twice as tall as wide.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");
const HUB_KEY: &str = "gwSyaptQc4Ro7MuZHihtpjDj+3wfQfTgSECpjCXT1SM=";
/// Pixels per module in the rasterised terminal.
const PX: usize = 6;

/// A terminal's colours (greyscale is enough for a scanner): the defaults a cell without an
/// ANSI colour gets, and the palette's black and bright white (Tango's, as GNOME shows them).
#[derive(Clone, Copy)]
struct Theme {
    fg: u8,
    bg: u8,
}
const LIGHT: Theme = Theme { fg: 0x2e, bg: 0xff };
const DARK: Theme = Theme { fg: 0xd3, bg: 0x1e };
const BLACK: u8 = 0x2e;
const BRIGHT_WHITE: u8 = 0xee;

/// One character cell: the character and its colours, `None` for the theme's default.
type Cell = (char, Option<u8>, Option<u8>);

/// Parses terminal output into rows of cells, keeping only the lines of the code (those made
/// of block characters and spaces, with or without colours); other lines (messages on a
/// terminal's shared stdout/stderr) are skipped.
fn cells(text: &str) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    let (mut fg, mut bg) = (None, None);
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        let mut row = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                assert_eq!(chars.next(), Some('['), "only CSI sequences in {line:?}");
                let mut params = String::new();
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                    params.push(c);
                }
                for p in params.split(';') {
                    match p {
                        "" | "0" => (fg, bg) = (None, None),
                        "30" => fg = Some(BLACK),
                        "97" => fg = Some(BRIGHT_WHITE),
                        "40" => bg = Some(BLACK),
                        "107" => bg = Some(BRIGHT_WHITE),
                        other => panic!("unexpected SGR {other:?} in {line:?}"),
                    }
                }
            } else {
                row.push((c, fg, bg));
            }
        }
        // A blank line of the quiet zone counts; a message has letters.
        let is_code =
            !row.is_empty() && row.iter().all(|(c, ..)| matches!(c, '▀' | '▄' | '█' | ' '));
        if is_code {
            rows.push(row);
        }
    }
    rows
}

/// A greyscale PNG of `rows` on a terminal with `theme`, with a margin of the terminal's
/// background around it (the rest of the window).
fn rasterise(rows: &[Vec<Cell>], theme: Theme) -> Vec<u8> {
    let margin = 4 * PX;
    let width = rows.iter().map(Vec::len).max().unwrap() * PX + 2 * margin;
    let height = rows.len() * 2 * PX + 2 * margin;
    let mut px = vec![theme.bg; width * height];
    for (r, row) in rows.iter().enumerate() {
        for (c, &(ch, fg, bg)) in row.iter().enumerate() {
            let (fg, bg) = (fg.unwrap_or(theme.fg), bg.unwrap_or(theme.bg));
            let (upper, lower) = match ch {
                '▀' => (fg, bg),
                '▄' => (bg, fg),
                '█' => (fg, fg),
                _ => (bg, bg),
            };
            for dy in 0..2 * PX {
                let v = if dy < PX { upper } else { lower };
                let y = margin + r * 2 * PX + dy;
                let x = margin + c * PX;
                px[y * width + x..y * width + x + PX].fill(v);
            }
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&px).unwrap();
    w.finish().unwrap();
    out
}

/// What `zbarimg` reads in the PNG at `path`: the raw bytes of the one code, or `None`.
fn zbar(path: &Path) -> Option<Vec<u8>> {
    let out = Command::new("zbarimg")
        .args(["--quiet", "--raw", "-Sbinary"])
        .arg(path)
        .output()
        .expect("zbarimg runs (Debian package zbar-tools; ci/install installs it)");
    out.status.success().then_some(out.stdout)
}

/// Decodes terminal output as `theme` shows it.
fn scan_terminal(dir: &Path, name: &str, text: &str, theme: Theme) -> Option<Vec<u8>> {
    let rows = cells(text);
    assert!(rows.len() > 10, "no QR code in:\n{text}");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, rasterise(&rows, theme)).unwrap();
    zbar(&path)
}

/// A directory with `inventory/example.yaml` as `net.yaml` and the hub's key pinned.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/example.yaml"),
        dir.path().join("net.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("net.keys.yaml"),
        format!("vps: \"{HUB_KEY}\"\n"),
    )
    .unwrap();
    dir
}

fn success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_png_and_the_plain_code_scan_as_the_config_and_the_plain_one_says_where() {
    let dir = setup();
    let d = dir.path();
    let out = Command::new(MESHCTL)
        .args(["client", "phone", "-i", "net.yaml", "-o", "phone.conf"])
        .args(["--qr", "--qr-png", "phone.png"])
        .env_remove("NO_COLOR")
        .current_dir(d)
        .output()
        .unwrap();
    success(&out);
    let config = std::fs::read(d.join("phone.conf")).unwrap();
    assert!(config.starts_with(b"# phone: WireGuard config made by meshctl"));

    // The PNG holds the private key, like the config: owner only.
    let mode = std::fs::metadata(d.join("phone.png"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        zbar(&d.join("phone.png")).as_deref(),
        Some(&config[..]),
        "the PNG"
    );

    // Not a terminal: no escape codes, a code for a light background, and a note saying so.
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scans on a light background only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let light = scan_terminal(d, "plain-light", &stdout, LIGHT);
    assert_eq!(
        light.as_deref(),
        Some(&config[..]),
        "plain on a light terminal"
    );
    // The bug the terminal form fixes: on a dark theme the plain code shows inverted and zbar
    // (0.23, Debian 12) reads nothing. Should a newer zbar read inverted codes, drop this check.
    assert_eq!(
        scan_terminal(d, "plain-dark", &stdout, DARK),
        None,
        "plain on a dark terminal"
    );
}

#[test]
fn on_a_terminal_the_code_scans_on_light_and_dark_backgrounds() {
    let dir = setup();
    let d = dir.path();
    // A real pseudo-terminal for meshctl's stdout: util-linux `script` (stdout and stderr
    // share it; the parser keeps the code's lines only).
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command"])
        .arg(format!(
            "{MESHCTL} client phone -i net.yaml -o phone.conf --qr"
        ))
        .arg("/dev/null")
        .env_remove("NO_COLOR")
        .current_dir(d)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script runs (util-linux)");
    success(&out);
    let config = std::fs::read(d.join("phone.conf")).unwrap();
    let tty = String::from_utf8(out.stdout).unwrap();
    assert!(tty.contains("\x1b[107m"), "colours on a terminal:\n{tty}");
    assert!(!tty.contains("light background only"), "{tty}");
    for (name, theme) in [("ansi-light", LIGHT), ("ansi-dark", DARK)] {
        let got = scan_terminal(d, name, &tty, theme);
        assert_eq!(got.as_deref(), Some(&config[..]), "{name}");
    }
}

#[test]
fn the_plain_code_is_what_a_dark_terminal_cannot_scan_but_colours_can() {
    // Why the terminal form forces colours: the same code without them, on a dark theme, is
    // inverted. Checked on meshctl's own renderings, so this holds whatever zbar does with
    // inverted codes: every cell of the plain form takes the theme's colours.
    let qr = meshctl::qr::Qr::new(b"[Interface]\n").unwrap();
    let plain = cells(&qr.plain());
    assert!(
        plain
            .iter()
            .flatten()
            .all(|&(_, fg, bg)| fg.is_none() && bg.is_none())
    );
    let ansi = cells(&qr.ansi());
    assert!(
        ansi.iter()
            .flatten()
            .all(|&(_, fg, bg)| fg.is_some() && bg.is_some())
    );
    assert_eq!(plain.len(), ansi.len());
}
