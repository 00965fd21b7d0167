//! QR codes for the terminal and for files: one module grid, three renderings. Pure: it returns
//! text and bytes; the caller decides where they go.
//!
//! A scanner needs dark modules on a light background with a light quiet zone around them. The
//! plain half-block form draws dark modules with block characters and leaves light ones as
//! spaces: right on a light terminal, but a dark terminal shows it inverted (a light code on
//! a dark quiet zone) and most scanners then read nothing. On a terminal the colours are
//! therefore set explicitly, black on bright white, for every cell; the plain form is kept for
//! output that is not a terminal (a file, a pipe, `NO_COLOR`), where escape codes would be noise.
//! A PNG is right anywhere.

use qrcode::{Color, QrCode};

/// Modules of light margin on each side: the QR specification asks for four.
pub const QUIET_ZONE: usize = 4;

/// Pixels per module in [`Qr::png`]: big enough for a phone camera or `zbarimg` to read from a
/// screen or a print.
pub const PNG_SCALE: usize = 8;

/// The module grid of a QR code, its quiet zone included.
#[derive(Debug, Clone)]
pub struct Qr {
    /// Modules per side, quiet zone included.
    size: usize,
    /// Row-major, `true` for a dark module.
    dark: Vec<bool>,
}

/// Which way the caller should show a code on its standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalForm {
    /// Black on white with ANSI colours: correct on any terminal background.
    Ansi,
    /// Block characters and spaces: correct only on a light background (so say so).
    Plain,
}

impl TerminalForm {
    /// The form for an output that is a terminal or not; `no_color` (the `NO_COLOR`
    /// convention) asks for no escape codes even on a terminal.
    pub fn choose(is_terminal: bool, no_color: bool) -> Self {
        if is_terminal && !no_color {
            Self::Ansi
        } else {
            Self::Plain
        }
    }

    /// What to tell the user about the form, if anything (it goes to stderr, not into the code).
    pub fn note(self) -> Option<&'static str> {
        match self {
            Self::Ansi => None,
            Self::Plain => Some(
                "The QR code is drawn without colours (no terminal, or NO_COLOR): it scans on a light background only; on a dark one use a terminal with colours or --qr-png FILE.",
            ),
        }
    }
}

/// ANSI SGR sequences: foreground/background black and bright white, and reset.
const FG_BLACK: &str = "\x1b[30m";
const FG_WHITE: &str = "\x1b[97m";
const BG_BLACK: &str = "\x1b[40m";
const BG_WHITE: &str = "\x1b[107m";
const RESET: &str = "\x1b[0m";

impl Qr {
    /// Encodes `data` (the whole of it, byte for byte) with the library's default error
    /// correction.
    pub fn new(data: &[u8]) -> Result<Self, qrcode::types::QrError> {
        let code = QrCode::new(data)?;
        let width = code.width();
        let size = width + 2 * QUIET_ZONE;
        let colors = code.to_colors();
        let mut dark = vec![false; size * size];
        for y in 0..width {
            for x in 0..width {
                dark[(y + QUIET_ZONE) * size + x + QUIET_ZONE] =
                    colors[y * width + x] == Color::Dark;
            }
        }
        Ok(Self { size, dark })
    }

    /// Modules per side, quiet zone included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the module at column `x`, row `y` is dark; outside the grid is light (the half
    /// row below an odd-sized code).
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        x < self.size && y < self.size && self.dark[y * self.size + x]
    }

    /// One line per two rows of modules: `▀`, `▄`, `█` or a space for the upper and lower
    /// module being dark. Correct on a light background only.
    pub fn plain(&self) -> String {
        let mut s = String::new();
        for y in (0..self.size).step_by(2) {
            for x in 0..self.size {
                s.push(match (self.is_dark(x, y), self.is_dark(x, y + 1)) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                });
            }
            s.push('\n');
        }
        s
    }

    /// One line per two rows of modules, each cell an upper half block `▀` whose foreground is
    /// the upper module and background the lower one, black or bright white: the terminal's own
    /// colours never show, so it scans on a dark background too. Each line ends with a reset.
    pub fn ansi(&self) -> String {
        let mut s = String::new();
        for y in (0..self.size).step_by(2) {
            let mut last = None;
            for x in 0..self.size {
                let cell = (self.is_dark(x, y), self.is_dark(x, y + 1));
                // Only a change of colour needs new escape codes.
                if last != Some(cell) {
                    s.push_str(if cell.0 { FG_BLACK } else { FG_WHITE });
                    s.push_str(if cell.1 { BG_BLACK } else { BG_WHITE });
                    last = Some(cell);
                }
                s.push('▀');
            }
            s.push_str(RESET);
            s.push('\n');
        }
        s
    }

    /// The code for a terminal in `form`.
    pub fn for_terminal(&self, form: TerminalForm) -> String {
        match form {
            TerminalForm::Ansi => self.ansi(),
            TerminalForm::Plain => self.plain(),
        }
    }

    /// A PNG: 8-bit greyscale, black modules on white, [`PNG_SCALE`] pixels per module.
    pub fn png(&self) -> Vec<u8> {
        let side = self.size * PNG_SCALE;
        let mut pixels = Vec::with_capacity(side * side);
        for py in 0..side {
            for px in 0..side {
                let dark = self.is_dark(px / PNG_SCALE, py / PNG_SCALE);
                pixels.push(if dark { 0 } else { 255 });
            }
        }
        let side = u32::try_from(side).expect("a QR code is at most 177 + 8 modules wide");
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        // Writing into memory with a valid header and exactly side² pixels cannot fail.
        let mut writer = encoder.write_header().expect("PNG header into memory");
        writer
            .write_image_data(&pixels)
            .expect("PNG data into memory");
        writer.finish().expect("PNG end into memory");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quiet_zone_is_light_and_four_modules_wide() {
        let qr = Qr::new(b"hello").unwrap();
        assert_eq!(qr.size(), 21 + 2 * QUIET_ZONE);
        for i in 0..qr.size() {
            for q in 0..QUIET_ZONE {
                assert!(!qr.is_dark(i, q) && !qr.is_dark(q, i));
                assert!(!qr.is_dark(i, qr.size() - 1 - q) && !qr.is_dark(qr.size() - 1 - q, i));
            }
        }
        // The top-left finder pattern starts right inside it.
        assert!(qr.is_dark(QUIET_ZONE, QUIET_ZONE));
    }

    #[test]
    fn plain_and_ansi_have_one_line_per_two_rows_and_the_same_cells() {
        let qr = Qr::new(b"hello").unwrap();
        let plain = qr.plain();
        let ansi = qr.ansi();
        assert_eq!(plain.lines().count(), qr.size().div_ceil(2));
        assert_eq!(ansi.lines().count(), qr.size().div_ceil(2));
        assert!(plain.lines().all(|l| l.chars().count() == qr.size()));
        assert!(!plain.contains('\x1b'));
        assert!(ansi.lines().all(|l| l.matches('▀').count() == qr.size()));
        assert!(ansi.lines().all(|l| l.ends_with(RESET)));
    }

    #[test]
    fn the_form_follows_the_terminal_and_no_color() {
        assert_eq!(TerminalForm::choose(true, false), TerminalForm::Ansi);
        assert_eq!(TerminalForm::choose(true, true), TerminalForm::Plain);
        assert_eq!(TerminalForm::choose(false, false), TerminalForm::Plain);
        assert!(TerminalForm::Plain.note().is_some() && TerminalForm::Ansi.note().is_none());
    }

    #[test]
    fn the_png_is_a_png_of_the_right_size() {
        let qr = Qr::new(b"hello").unwrap();
        let png = qr.png();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let side = u32::try_from(qr.size() * PNG_SCALE).unwrap();
        // IHDR: width and height, big-endian, right after the signature and chunk header.
        assert_eq!(png[16..20], side.to_be_bytes());
        assert_eq!(png[20..24], side.to_be_bytes());
    }
}
