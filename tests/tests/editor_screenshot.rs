//! The standalone app's editor under Xvfb, generating with the tiny model fixture, two slots
//! active with live concept meters: a screenshot is taken (and, with
//! `MUSICRFM_UPDATE_SCREENSHOT=1`, written to `docs/editor.png`); it is not blank, and the
//! pixels where the two meters are drawn change between two frames while the music generates.
//!
//! The app is `$MUSICRFM_STANDALONE` (`cargo xtask test` builds it in debug with
//! `--features standalone,assert_process_allocs`, so an allocation in `process()` with the
//! editor open aborts it, and the test sees it die). Xvfb and xwd come from Debian's `xvfb` and
//! `x11-apps`. Without `$MUSICRFM_STANDALONE` or Xvfb the test says so and passes, unless
//! `MUSICRFM_REQUIRE_SCREENSHOT` is set (CI sets it).

#[path = "../../engine/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use directions::DirectionsFile;

const WAIT: Duration = Duration::from_secs(240);

/// Children killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A 3-class directions file of the model's LM-head columns `codes`, and a 3-class probe
/// beside it (the layout `train-probes` writes), so the engine meters it.
fn metered_directions(
    model: &engine::MusicGen,
    dir: &Path,
    stem: &str,
    codes: [usize; 3],
) -> PathBuf {
    let heads: Vec<DirectionsFile> = codes
        .iter()
        .map(|&c| common::host::head_direction(model, c))
        .collect();
    let mut file = heads[0].clone();
    file.concept = stem.into();
    file.classes = vec!["low".into(), "mid".into(), "high".into()];
    file.kind = directions::ConceptKind::Binary;
    file.directions = heads.iter().map(|h| h.directions[0].clone()).collect();
    file.scores = heads.iter().map(|h| h.scores[0].clone()).collect();
    let path = dir.join(format!("{stem}.safetensors"));
    file.write(&path).unwrap();

    let d = model.decoder.d_model();
    let probe = common::host::test_probe(d, codes[0]);
    probe
        .save(&dir.join(format!("{stem}.probe.safetensors")))
        .unwrap();
    std::fs::write(
        dir.join(format!("{stem}.report.json")),
        format!(r#"{{"probe": {{"file": "{stem}.probe.safetensors", "block": 1, "kind": "multiclass"}}}}"#),
    )
    .unwrap();
    path
}

/// An RGB picture.
struct Picture {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Picture {
    /// An `xwd` dump (X Window Dump, version 7, 24/32-bit TrueColor).
    fn from_xwd(bytes: &[u8]) -> Picture {
        let field =
            |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
        let (header, version) = (field(0), field(1));
        assert_eq!(version, 7, "xwd file version");
        let (width, height) = (field(4), field(5));
        let lsb_first = field(7) == 0;
        let bits_per_pixel = field(11);
        let bytes_per_line = field(12);
        let ncolors = field(19);
        assert_eq!(bits_per_pixel, 32, "xwd: 32 bits per pixel expected");
        let data = &bytes[header + ncolors * 12..];
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                let p = &data[y * bytes_per_line + x * 4..][..4];
                let v = if lsb_first {
                    u32::from_le_bytes(p.try_into().unwrap())
                } else {
                    u32::from_be_bytes(p.try_into().unwrap())
                };
                rgb.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
            }
        }
        Picture { width, height, rgb }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Pixels of `rect` (x0, y0, x1, y1) that differ from `other`'s.
    fn changed(&self, other: &Picture, rect: [usize; 4]) -> usize {
        let [x0, y0, x1, y1] = rect;
        (y0..y1.min(self.height))
            .flat_map(|y| (x0..x1.min(self.width)).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y) != other.pixel(x, y))
            .count()
    }

    /// Whether `rect` shows meter bars (the editor's bar colours, slot::meter_ui).
    fn has_bars(&self, rect: [usize; 4]) -> bool {
        let [x0, y0, x1, y1] = rect;
        let near = |c: [u8; 3], t: [u8; 3]| c.iter().zip(t).all(|(a, b)| a.abs_diff(b) <= 4);
        let bar = |c: [u8; 3]| near(c, [90, 150, 220]) || near(c, [250, 180, 60]);
        (y0..y1.min(self.height))
            .flat_map(|y| (x0..x1.min(self.width)).map(move |x| (x, y)))
            .filter(|&(x, y)| bar(self.pixel(x, y)))
            .count()
            > 20
    }

    fn distinct_colors(&self) -> usize {
        let mut colors: Vec<[u8; 3]> = self.rgb.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        colors.sort_unstable();
        colors.dedup();
        colors.len()
    }

    fn write_png(&self, path: &Path) {
        let file = std::fs::File::create(path).unwrap();
        let mut encoder = png::Encoder::new(
            std::io::BufWriter::new(file),
            self.width as u32,
            self.height as u32,
        );
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::High);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&self.rgb)
            .unwrap();
    }
}

fn capture(display: &str, out: &Path) -> Option<Picture> {
    let status = Command::new("xwd")
        .args(["-display", display, "-name", "musicrfm", "-silent", "-out"])
        .arg(out)
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    Some(Picture::from_xwd(&std::fs::read(out).ok()?))
}

/// The meters' rectangles (physical pixels) the editor wrote, once slots 1 and 2 have one.
fn meter_rects(layout: &Path) -> Option<[[usize; 4]; 2]> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(layout).ok()?).ok()?;
    let rect = |k: usize| -> Option<[usize; 4]> {
        let r = json["meters"][k].as_array()?;
        let v: Vec<usize> = r
            .iter()
            .filter_map(|x| x.as_f64())
            .map(|x| x as usize)
            .collect();
        (v.len() == 4).then(|| [v[0], v[1], v[2], v[3]])
    };
    Some([rect(0)?, rect(1)?])
}

#[test]
fn the_standalone_editor_shows_two_live_meters_under_xvfb() {
    let required = std::env::var_os("MUSICRFM_REQUIRE_SCREENSHOT").is_some();
    let Some(app) = std::env::var_os("MUSICRFM_STANDALONE").map(PathBuf::from) else {
        assert!(
            !required,
            "MUSICRFM_STANDALONE is not set (run `cargo xtask test`)"
        );
        eprintln!("skipped: MUSICRFM_STANDALONE is not set (cargo xtask test sets it)");
        return;
    };
    if !on_path("Xvfb") || !on_path("xwd") {
        assert!(
            !required,
            "Xvfb and xwd are needed: apt-get install xvfb x11-apps"
        );
        eprintln!("skipped: no Xvfb / xwd (apt-get install xvfb x11-apps)");
        return;
    }

    let scratch = common::temp_dir("screenshot");
    let dir = scratch.path();
    let model_dir = common::model_dir("musicgen-tiny");
    let model = engine::MusicGen::load(&model_dir, &common::device()).unwrap();
    let chords = metered_directions(&model, dir, "chords", [55, 66, 77]);
    let tempo = metered_directions(&model, dir, "tempo", [12, 34, 56]);
    drop(model);

    // A screen larger than twice the window: X puts the pointer at its centre, off the
    // editor, so no tooltip covers it.
    let number = (std::process::id() % 400) + 100;
    let display = format!(":{number}");
    let _xvfb = Killed(
        Command::new("Xvfb")
            .args([
                display.as_str(),
                "-screen",
                "0",
                "2400x2000x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts"),
    );
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
    let started = Instant::now();
    while !socket.exists() {
        assert!(started.elapsed() < WAIT, "Xvfb did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let layout = dir.join("layout.json");
    let slot = |k: usize, file: &Path, class: &str| format!("{k}={}:{class}", file.display());
    let mut app = App(
        Command::new(&app)
            .env("DISPLAY", &display)
            .env(gui_layout_env(), &layout)
            .args([
                "--backend",
                "dummy",
                "--sample-rate",
                "32000",
                "--period-size",
                "512",
            ])
            .arg("--model")
            .arg(&model_dir)
            .args(["--prompt", "80s pop track with bassy drums and synth"])
            .arg("--slot")
            .arg(slot(1, &chords, "mid"))
            .arg("--slot")
            .arg(slot(2, &tempo, "high"))
            .args([
                "--set",
                "slot1-strength=0.6",
                "--set",
                "slot2-strength=-0.4",
            ])
            .args(["--set", "gate=1", "--play"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("app.log")).unwrap())
            .spawn()
            .expect("the standalone app starts"),
        dir.join("app.log"),
    );

    // Wait for the editor's layout, then for both meters to move between two frames.
    let started = Instant::now();
    let rects = loop {
        if let Some(rects) = meter_rects(&layout) {
            break rects;
        }
        alive(&mut app);
        assert!(started.elapsed() < WAIT, "the editor never drew its meters");
        std::thread::sleep(Duration::from_millis(200));
    };
    let frame = |i: usize| dir.join(format!("frame{i}.xwd"));
    let mut previous: Option<Picture> = None;
    let mut shot = None;
    for i in 0.. {
        alive(&mut app);
        assert!(
            started.elapsed() < WAIT,
            "the meter regions {rects:?} did not change between frames while generating"
        );
        std::thread::sleep(Duration::from_millis(700));
        let Some(now) = capture(&display, &frame(i % 2)) else {
            continue;
        };
        if let Some(before) = &previous {
            let moved = rects.map(|r| now.changed(before, r));
            // A meter that has drawn bars and moves: both slots' regions changed.
            let bars = |p: &Picture| rects.iter().all(|&r| p.has_bars(r));
            if moved.iter().all(|&m| m > 20) && bars(&now) && bars(before) {
                shot = Some((now, moved));
                break;
            }
        }
        previous = Some(now);
    }
    let (shot, moved) = shot.unwrap();
    alive(&mut app);

    // Not blank: many colours, and most rows have something on them.
    let busy_rows = (0..shot.height)
        .filter(|&y| (1..shot.width).any(|x| shot.pixel(x, y) != shot.pixel(0, y)))
        .count();
    assert!(
        shot.distinct_colors() > 30,
        "{} colours",
        shot.distinct_colors()
    );
    assert!(
        busy_rows > shot.height / 2,
        "{busy_rows} of {} rows drawn",
        shot.height
    );
    eprintln!(
        "screenshot {}x{}: {} colours; meter pixels changed between frames: {moved:?}",
        shot.width,
        shot.height,
        shot.distinct_colors()
    );
    let out = if std::env::var_os("MUSICRFM_UPDATE_SCREENSHOT").is_some() {
        xtask::workspace_root().join("docs/editor.png")
    } else {
        dir.join("editor.png")
    };
    shot.write_png(&out);
    eprintln!("written to {}", out.display());
}

/// The standalone app, and the file its stderr goes to.
struct App(Child, PathBuf);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The standalone app must still run (an allocation in `process()` aborts it).
fn alive(app: &mut App) {
    if let Ok(Some(status)) = app.0.try_wait() {
        let log = std::fs::read_to_string(&app.1).unwrap_or_default();
        panic!("the standalone app exited ({status}):\n{log}");
    }
}

fn gui_layout_env() -> &'static str {
    "MUSICRFM_EDITOR_LAYOUT"
}
