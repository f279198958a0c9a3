//! The editor driven through egui_kittest (no window, no GPU): controls are found by their
//! accessible labels, the pointer and keyboard are simulated, and what the editor did is read
//! back from a model and a host context of the test's own — the context records the
//! begin/set/end gestures that a host would receive, and applies the values as a wrapper does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use egui::{Event, Modifiers, PointerButton, Pos2, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use gui::{
    EditorApp, EditorModel, EngineView, MeterView, ModelView, SlotDirections, TransportView,
};
use nice_plug::context::PluginApi;
use nice_plug::context::gui::{GuiContext, GuiContextInner};
use nice_plug::params::internals::ParamPtr;
use nice_plug::prelude::*;
use parking_lot::Mutex;

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
enum TestShape {
    Const,
    Rise,
}

/// What a host would receive from the editor.
#[derive(Debug, Clone, PartialEq)]
enum Gesture {
    Begin(String),
    Set(String, f32),
    End(String),
}

struct TestHost {
    api: PluginApi,
    gestures: Mutex<Vec<Gesture>>,
}

impl GuiContextInner for TestHost {
    fn plugin_api(&self) -> PluginApi {
        self.api
    }
    unsafe fn raw_begin_set_parameter(&self, param: ParamPtr) {
        let name = unsafe { param.name() }.to_owned();
        self.gestures.lock().push(Gesture::Begin(name));
    }
    unsafe fn raw_set_parameter_normalized(&self, param: ParamPtr, normalized: f32) {
        let name = unsafe { param.name() }.to_owned();
        self.gestures.lock().push(Gesture::Set(name, normalized));
        // As the wrappers do: the parameter takes the value the host is told.
        unsafe { param._internal_set_normalized_value(normalized) };
    }
    unsafe fn raw_end_set_parameter(&self, param: ParamPtr) {
        let name = unsafe { param.name() }.to_owned();
        self.gestures.lock().push(Gesture::End(name));
    }
    fn get_state(&self) -> PluginState {
        PluginState {
            version: String::new(),
            params: Default::default(),
            fields: Default::default(),
        }
    }
    fn set_state(&self, _state: PluginState) {}
    fn request_restart(&self) {}
}

struct TestModel {
    master: FloatParam,
    gate: FloatParam,
    strength: [FloatParam; gui::SLOTS],
    shape: [EnumParam<TestShape>; gui::SLOTS],
    length: [FloatParam; gui::SLOTS],
    source: Mutex<String>,
    prompt: Mutex<String>,
    prompt_commits: AtomicUsize,
    slots: Mutex<[SlotDirections; gui::SLOTS]>,
    status: Mutex<String>,
    engine: Mutex<Option<EngineView>>,
    playing: Mutex<Option<bool>>,
}

impl Default for TestModel {
    fn default() -> Self {
        let range = FloatRange::Linear {
            min: -2.0,
            max: 2.0,
        };
        Self {
            master: FloatParam::new("Master", 1.0, FloatRange::Linear { min: 0.0, max: 2.0 }),
            gate: FloatParam::new("Gate", 0.3, FloatRange::Linear { min: 0.0, max: 1.0 }),
            strength: std::array::from_fn(|i| {
                FloatParam::new(format!("Slot {} strength", i + 1), 0.0, range)
            }),
            shape: std::array::from_fn(|i| {
                EnumParam::new(format!("Slot {} shape", i + 1), TestShape::Const)
            }),
            length: std::array::from_fn(|i| {
                FloatParam::new(
                    format!("Slot {} length", i + 1),
                    8.0,
                    FloatRange::Linear {
                        min: 0.1,
                        max: 120.0,
                    },
                )
            }),
            source: Mutex::default(),
            prompt: Mutex::default(),
            prompt_commits: AtomicUsize::new(0),
            slots: Mutex::default(),
            status: Mutex::default(),
            engine: Mutex::default(),
            playing: Mutex::default(),
        }
    }
}

impl EditorModel for TestModel {
    type Shape = TestShape;
    fn master(&self) -> &FloatParam {
        &self.master
    }
    fn gate(&self) -> &FloatParam {
        &self.gate
    }
    fn slot_strength(&self, slot: usize) -> &FloatParam {
        &self.strength[slot]
    }
    fn slot_shape(&self, slot: usize) -> &EnumParam<TestShape> {
        &self.shape[slot]
    }
    fn slot_length(&self, slot: usize) -> &FloatParam {
        &self.length[slot]
    }
    fn alpha_preview(&self, slot: usize, _from_step: u64, out: &mut [f32]) {
        out.fill(self.master.value() * self.strength[slot].value());
    }
    fn model_source(&self) -> String {
        self.source.lock().clone()
    }
    fn set_model_source(&self, source: &str) {
        *self.source.lock() = source.to_owned();
    }
    fn cached_models(&self) -> Vec<String> {
        vec!["facebook/musicgen-small".into()]
    }
    fn prompt(&self) -> String {
        self.prompt.lock().clone()
    }
    fn set_prompt(&self, prompt: &str) {
        self.prompt_commits.fetch_add(1, SeqCst);
        *self.prompt.lock() = prompt.to_owned();
    }
    fn slot_directions(&self, slot: usize) -> SlotDirections {
        self.slots.lock()[slot].clone()
    }
    fn set_slot_directions(&self, slot: usize, directions: SlotDirections) {
        self.slots.lock()[slot] = directions;
    }
    fn status_line(&self) -> Option<String> {
        Some(self.status.lock().clone())
    }
    fn engine(&self) -> Option<EngineView> {
        self.engine.lock().clone()
    }
    fn editor_size(&self) -> (f32, f32) {
        gui::EDITOR_SIZE
    }
    fn set_editor_size(&self, _size: (f32, f32)) {}
    fn transport(&self) -> Option<TransportView> {
        Some(TransportView {
            playing: self.playing.lock().unwrap_or(false),
            position_seconds: 0.0,
        })
    }
    fn set_playing(&self, playing: bool) {
        *self.playing.lock() = Some(playing);
    }
    fn rewind(&self) {}
}

struct Editor {
    model: Arc<TestModel>,
    host: Arc<TestHost>,
}

fn editor_with(
    model: TestModel,
    api: PluginApi,
    scale: f32,
) -> (Harness<'static, EditorApp<TestModel>>, Editor) {
    let model = Arc::new(model);
    let host = Arc::new(TestHost {
        api,
        gestures: Mutex::default(),
    });
    let mut app = EditorApp::new(model.clone());
    app.attach(GuiContext::new(host.clone()));
    let harness = Harness::builder()
        .with_size(Vec2::new(gui::EDITOR_SIZE.0, gui::EDITOR_SIZE.1))
        .with_pixels_per_point(scale)
        .with_max_steps(32)
        .with_step_dt(1.0 / 60.0)
        .build_ui_state(|ui, app: &mut EditorApp<TestModel>| app.draw(ui), app);
    (harness, Editor { model, host })
}

fn editor() -> (Harness<'static, EditorApp<TestModel>>, Editor) {
    editor_with(TestModel::default(), PluginApi::Clap, 1.0)
}

/// Press at `from`, move to `to` in a few steps, release.
fn drag(
    harness: &mut Harness<'_, EditorApp<TestModel>>,
    from: Pos2,
    to: Pos2,
    modifiers: Modifiers,
) {
    harness.event(Event::PointerMoved(from));
    harness.step();
    harness.event_modifiers(
        Event::PointerButton {
            pos: from,
            button: PointerButton::Primary,
            pressed: true,
            modifiers,
        },
        modifiers,
    );
    harness.step();
    for i in 1..=4 {
        let p = from + (to - from) * (i as f32 / 4.0);
        harness.event_modifiers(Event::PointerMoved(p), modifiers);
        harness.step();
    }
    harness.event_modifiers(
        Event::PointerButton {
            pos: to,
            button: PointerButton::Primary,
            pressed: false,
            modifiers,
        },
        modifiers,
    );
    harness.step();
    harness.step();
}

/// The gestures recorded for `name`: one begin, then only sets, then one end.
fn single_gesture(gestures: &[Gesture], name: &str) -> Vec<f32> {
    let mine: Vec<&Gesture> = gestures
        .iter()
        .filter(|g| match g {
            Gesture::Begin(n) | Gesture::End(n) | Gesture::Set(n, _) => n == name,
        })
        .collect();
    assert!(mine.len() >= 3, "{mine:?}");
    assert_eq!(mine[0], &Gesture::Begin(name.into()), "{mine:?}");
    assert_eq!(mine[mine.len() - 1], &Gesture::End(name.into()), "{mine:?}");
    mine[1..mine.len() - 1]
        .iter()
        .map(|g| match g {
            Gesture::Set(_, v) => *v,
            other => panic!("inside the gesture: {other:?}"),
        })
        .collect()
}

/// A valid directions file with `classes`, width `d_model`.
fn directions_file(path: &Path, classes: &[&str], d_model: usize) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let unit: Vec<f32> = (0..d_model)
        .map(|i| if i == 0 { 1.0 } else { 0.0 })
        .collect();
    directions::DirectionsFile {
        concept: "chords".into(),
        classes: classes.iter().map(|c| c.to_string()).collect(),
        kind: directions::ConceptKind::Binary,
        metric: "auc".into(),
        model: "musicgen-test".into(),
        d_model,
        n_layers_model: 2,
        pooling: "mean".into(),
        site: "block_output".into(),
        layers: vec![0, 1],
        directions: vec![vec![unit; 2]; classes.len()],
        scores: vec![vec![1.0; 2]; classes.len()],
    }
    .write(path)
    .unwrap();
    path.to_owned()
}

/// A fresh scratch directory `gui-editor-{name}-…`, removed with its files when dropped.
fn temp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("gui-editor-{name}-"))
        .tempdir()
        .unwrap()
}

/// Type `text` into the field labelled `label` and press Enter.
fn enter_text(harness: &mut Harness<'_, EditorApp<TestModel>>, label: &str, text: &str) {
    harness.get_by_label(label).click();
    harness.run();
    harness.get_by_label(label).type_text(text);
    harness.run();
    harness.key_press(egui::Key::Enter);
    harness.run();
}

fn engine_view(d_model: usize, meters: [Option<MeterView>; gui::SLOTS]) -> EngineView {
    EngineView {
        model: ModelView::Loaded {
            name: "/models/musicgen-tiny".into(),
            d_model,
            blocks: 2,
        },
        backend: "CPU (burn flex)",
        running: true,
        step: 250,
        steps_done: 250,
        underruns: 3,
        slides: 0,
        cached_steps: 0,
        prompt_pending: false,
        steps_per_second: Some(25.0),
        buffered_seconds: 0.06,
        buffer_capacity_seconds: 2.7,
        latency_seconds: 0.1,
        meters,
    }
}

#[test]
fn every_control_is_found_by_its_label() {
    let (mut harness, _) = editor();
    harness.run();
    for label in [
        "Model source",
        "Prompt text",
        "Master strength",
        "Gate probability",
    ] {
        harness.get_by_label(label);
    }
    for k in 1..=gui::SLOTS {
        for what in ["file", "strength", "shape", "length"] {
            harness.get_by_label(&format!("Slot {k} {what}"));
        }
    }
    harness.get_by_label("Apply prompt");
    harness.get_by_label("Load");
}

#[test]
fn dragging_a_slot_fader_writes_the_parameter_in_one_begin_set_end_gesture() {
    let (mut harness, editor) = editor();
    harness.run();
    let rect = harness.get_by_label("Slot 3 strength").rect();
    // A quarter of the fader's width to the right: a quarter of the range (-2..2) up.
    drag(
        &mut harness,
        rect.center(),
        rect.center() + Vec2::new(rect.width() / 4.0, 0.0),
        Modifiers::NONE,
    );
    let sets = single_gesture(&editor.host.gestures.lock(), "Slot 3 strength");
    let value = editor.model.strength[2].value();
    assert!((value - 1.0).abs() < 0.03, "strength {value}");
    assert!((sets.last().unwrap() - 0.75).abs() < 0.01, "{sets:?}");
    // Nothing else moved.
    assert_eq!(editor.model.strength[1].value(), 0.0);
    assert_eq!(editor.model.strength[3].value(), 0.0);
}

#[test]
fn shift_drags_ten_times_finer() {
    let (mut harness, editor) = editor();
    harness.run();
    let rect = harness.get_by_label("Slot 1 strength").rect();
    drag(
        &mut harness,
        rect.center(),
        rect.center() + Vec2::new(rect.width() / 4.0, 0.0),
        Modifiers::SHIFT,
    );
    single_gesture(&editor.host.gestures.lock(), "Slot 1 strength");
    let value = editor.model.strength[0].value();
    assert!((value - 0.1).abs() < 0.01, "strength {value}");
}

#[test]
fn a_double_click_resets_and_the_wheel_steps_each_as_one_gesture() {
    let (mut harness, editor) = editor();
    harness.run();
    let rect = harness.get_by_label("Slot 2 strength").rect();
    harness.event(Event::PointerMoved(rect.center()));
    harness.step();
    harness.event(Event::MouseWheel {
        unit: egui::MouseWheelUnit::Line,
        delta: Vec2::new(0.0, 1.0),
        phase: egui::TouchPhase::Move,
        modifiers: Modifiers::NONE,
        source: egui::MouseWheelSource::Wheel,
    });
    harness.run();
    let sets = single_gesture(&editor.host.gestures.lock(), "Slot 2 strength");
    assert_eq!(sets.len(), 1);
    let value = editor.model.strength[1].value();
    assert!(
        (value - 0.04).abs() < 1e-4,
        "one notch = 1 % of the range: {value}"
    );

    editor.host.gestures.lock().clear();
    harness.get_by_label("Slot 2 strength").click();
    harness.step();
    harness.get_by_label("Slot 2 strength").click();
    harness.run();
    let sets = single_gesture(&editor.host.gestures.lock(), "Slot 2 strength");
    assert_eq!(sets, vec![0.5], "the default (0) is normalised 0.5");
    assert_eq!(editor.model.strength[1].value(), 0.0);
}

#[test]
fn arrow_keys_step_a_focused_fader() {
    let (mut harness, editor) = editor();
    harness.run();
    harness.get_by_label("Master strength").click();
    harness.run();
    harness.key_press(egui::Key::ArrowRight);
    harness.run();
    let value = editor.model.master.value();
    assert!((value - 1.02).abs() < 1e-4, "master {value}");
}

#[test]
fn the_prompt_is_applied_once_on_enter_never_per_keystroke() {
    let (mut harness, editor) = editor();
    harness.run();
    harness.get_by_label("Prompt text").click();
    harness.run();
    harness.get_by_label("Prompt text").type_text("lofi piano");
    harness.run();
    assert_eq!(
        editor.model.prompt_commits.load(SeqCst),
        0,
        "typing applies nothing"
    );
    assert_eq!(editor.model.prompt(), "");
    harness.key_press(egui::Key::Enter);
    harness.run();
    harness.run();
    assert_eq!(editor.model.prompt_commits.load(SeqCst), 1);
    assert_eq!(editor.model.prompt(), "lofi piano");
    // The button applies only a prompt that differs from the applied one.
    harness.get_by_label("Apply prompt").click();
    harness.run();
    assert_eq!(editor.model.prompt_commits.load(SeqCst), 1);
}

#[test]
fn a_directions_file_fills_the_class_dropdown() {
    let scratch = temp("classes");
    let file = directions_file(
        &scratch.path().join("chords.safetensors"),
        &["major", "minor", "dim"],
        64,
    );
    let (mut harness, editor) = editor();
    harness.run();
    enter_text(&mut harness, "Slot 1 file", &file.display().to_string());
    // Committed with the file's first class.
    let slot = editor.model.slot_directions(0);
    assert_eq!(slot.file, file.display().to_string());
    assert_eq!(slot.class, "major");
    harness.get_by_label_contains("chords · 3 classes · for musicgen-test (width 64)");
    harness.get_by_label("Slot 1 class").click();
    harness.run();
    for class in ["minor", "dim"] {
        harness.get_by_label(class);
    }
    harness.get_by_label("dim").click();
    harness.run();
    assert_eq!(editor.model.slot_directions(0).class, "dim");
    // No probe beside it: the strip says so.
    harness.get_by_label("No concept meter: no probe beside this file");
}

#[test]
fn a_corrupt_file_is_an_error_on_its_strip_naming_it() {
    let scratch = temp("corrupt");
    let path = scratch.path().join("broken.safetensors");
    std::fs::write(&path, b"this is not a safetensors file").unwrap();
    let (mut harness, _) = editor();
    harness.run();
    enter_text(&mut harness, "Slot 4 file", &path.display().to_string());
    let error = harness.get_by_label_contains("broken.safetensors: not a safetensors file");
    assert!(error.rect().width() > 0.0);
    assert!(
        harness.query_by_label("Slot 4 class").is_none(),
        "no classes to pick"
    );
}

#[test]
fn engine_errors_are_a_banner_naming_the_file() {
    let model = TestModel::default();
    *model.status.lock() =
        "Engine error: slot 2 (/dirs/notes.safetensors): class `H` is not in this file".into();
    let (mut harness, _) = editor_with(model, PluginApi::Clap, 1.0);
    harness.run();
    harness.get_by_label_contains("Engine error: slot 2 (/dirs/notes.safetensors)");
}

#[test]
fn a_width_mismatch_with_the_loaded_model_is_an_error_on_the_strip() {
    let scratch = temp("width");
    let file = directions_file(&scratch.path().join("wide.safetensors"), &["a", "b"], 32);
    let model = TestModel::default();
    model.slots.lock()[5] = SlotDirections {
        file: file.display().to_string(),
        class: "a".into(),
        midi: false,
    };
    *model.engine.lock() = Some(engine_view(64, Default::default()));
    let (mut harness, _) = editor_with(model, PluginApi::Clap, 1.0);
    harness.run();
    harness.get_by_label_contains(
        "made for a model of width 32 (musicgen-test); the loaded model has width 64",
    );
}

#[test]
fn the_engine_panel_and_live_meters_show_the_engine_readout() {
    let scratch = temp("meter");
    let dir = scratch.path();
    let file = directions_file(&dir.join("chords.safetensors"), &["major", "minor"], 64);
    std::fs::write(dir.join("chords.probe.safetensors"), b"probe").unwrap();
    std::fs::write(
        dir.join("chords.report.json"),
        r#"{"probe": {"file": "chords.probe.safetensors", "block": 1, "kind": "multiclass"}}"#,
    )
    .unwrap();
    let model = TestModel::default();
    model.slots.lock()[0] = SlotDirections {
        file: file.display().to_string(),
        class: "minor".into(),
        midi: false,
    };
    let mut meters: [Option<MeterView>; gui::SLOTS] = Default::default();
    meters[0] = Some(MeterView {
        scores: vec![0.25, 0.75],
        updates: 4,
    });
    *model.engine.lock() = Some(engine_view(64, meters));
    let (mut harness, _) = editor_with(model, PluginApi::Clap, 1.0);
    harness.run();
    harness.get_by_label("Slot 1 meter: major 25 %, minor 75 %");
    for value in ["25.0", "0.50×", "60 ms", "100 ms", "250 (0:05.0)"] {
        harness.get_by_label(value);
    }
    assert!(harness.query_by_label(PROMPT_PENDING).is_none());
}

const PROMPT_PENDING: &str = "encoding the new prompt…";
const SLOW_ON_CPU: &str = "slower than real time: try the weights parameter at q4, a shorter context, or an offline bounce";

/// Slower than real time on a CPU, the panel says which knobs help; not when it keeps up, and
/// not on a GPU (whose pace the weights' bytes do not set).
#[test]
fn the_engine_panel_says_what_helps_when_a_cpu_is_too_slow() {
    for (steps_per_second, backend, shown) in [
        (25.0, "CPU (burn flex)", true),
        (60.0, "CPU (burn flex)", false),
        (25.0, "CUDA (burn-cuda)", false),
    ] {
        let model = TestModel::default();
        let mut view = engine_view(64, Default::default());
        view.steps_per_second = Some(steps_per_second);
        view.backend = backend;
        *model.engine.lock() = Some(view);
        let (mut harness, _) = editor_with(model, PluginApi::Clap, 1.0);
        harness.run();
        assert_eq!(
            harness.query_by_label(SLOW_ON_CPU).is_some(),
            shown,
            "{steps_per_second} steps/s on {backend}"
        );
    }
}

/// While the engine encodes a prompt applied during playback, the panel says so.
#[test]
fn the_engine_panel_says_when_a_new_prompt_is_being_encoded() {
    let model = TestModel::default();
    let mut view = engine_view(64, Default::default());
    view.prompt_pending = true;
    *model.engine.lock() = Some(view);
    let (mut harness, _) = editor_with(model, PluginApi::Clap, 1.0);
    harness.run();
    harness.get_by_label(PROMPT_PENDING);
}

#[test]
fn the_standalone_has_its_own_play_and_stop_and_a_host_does_not() {
    let (mut harness, standalone) = editor_with(TestModel::default(), PluginApi::Standalone, 1.0);
    harness.run();
    harness.get_by_label("Play").click();
    harness.run();
    assert_eq!(*standalone.model.playing.lock(), Some(true));
    harness.get_by_label("Stop").click();
    harness.run();
    assert_eq!(*standalone.model.playing.lock(), Some(false));

    let (mut harness, _) = editor();
    harness.run();
    assert!(harness.query_by_label("Play").is_none());
}

#[test]
fn at_200_percent_the_slot_faders_are_laid_out_apart() {
    let (mut harness, _) = editor_with(TestModel::default(), PluginApi::Clap, 2.0);
    harness.run();
    let rects: Vec<egui::Rect> = (1..=4)
        .map(|k| harness.get_by_label(&format!("Slot {k} strength")).rect())
        .collect();
    for (i, a) in rects.iter().enumerate() {
        assert!(a.width() >= 100.0 && a.height() >= 14.0, "{a:?}");
        for b in &rects[i + 1..] {
            assert!(!a.intersects(*b), "{a:?} overlaps {b:?}");
        }
    }
}
