//! The musicrfm editor, drawn with egui inside the host's window (nice-plug-egui / baseview).
//!
//! The editor knows nothing about the plugin struct or the engine: the plugin hands it an
//! [`EditorModel`], the view of its parameters, persisted state and engine readout that the
//! panel shows and edits. That keeps the dependency arrow `gui ← plugin` pointing one way, and
//! lets the tests drive the editor with a model of their own.
//!
//! Threads: everything here runs on the GUI thread and never blocks on the engine (the readout
//! is atomics; see `engine::stream::Monitor`). Parameters change only through the host-facing
//! [`ParamSetter`] with begin/set/end gestures; persisted state changes only when the user
//! commits an edit (Enter, a button, a pick), never per keystroke.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use egui::{Color32, RichText, Ui};
use nice_plug::context::PluginApi;
use nice_plug::context::gui::GuiContext;
use nice_plug::prelude::ParamSetter;
use nice_plug_egui::{
    EguiEditor, EguiEditorState, EguiNiceSettings, Frame, NiceEguiApp, RepaintNotifier,
    create_egui_editor,
};

pub mod directions_info;
pub mod fader;
pub mod model;
pub mod slot;
pub mod tips;

pub use directions_info::DirectionsInfo;
pub use model::{
    EditorModel, EngineView, MeterView, ModelView, SLOTS, STEPS_PER_SECOND, SlotDirections,
    TransportView,
};

use fader::Fader;
use slot::{ERROR_COLOR, SlotStrip};

/// Default logical size of the editor window.
pub const EDITOR_SIZE: (f32, f32) = (1000.0, 860.0);
/// The smallest size the window may be resized to.
pub const MIN_SIZE: (f32, f32) = (640.0, 420.0);
/// How often the editor redraws while an engine runs (meters, engine panel).
const REFRESH: Duration = Duration::from_millis(100);
/// Environment variable: a file the editor writes its meter rectangles to (physical pixels,
/// JSON), so a screenshot test knows where to look.
pub const LAYOUT_ENV: &str = "MUSICRFM_EDITOR_LAYOUT";

/// The egui application behind the editor window.
pub struct EditorApp<M: EditorModel> {
    model: Arc<M>,
    /// Set in [`NiceEguiApp::build`], when the host opens the window.
    gui_context: Option<GuiContext>,
    /// The prompt as typed, and the one last applied.
    prompt_draft: String,
    /// The model source as typed.
    model_draft: String,
    strips: [SlotStrip; SLOTS],
    /// The last status line read (the plugin's writer may hold it for an instant).
    status: String,
    /// The last model readout that was not `Busy`.
    model_view: ModelView,
    cached_models: Option<Vec<String>>,
    /// The window state, to apply a persisted size when the window opens.
    window: Option<Arc<EguiEditorState>>,
    layout_file: Option<PathBuf>,
    layout_written: String,
}

impl<M: EditorModel> EditorApp<M> {
    pub fn new(model: Arc<M>) -> Self {
        let mut app = Self {
            prompt_draft: String::new(),
            model_draft: String::new(),
            strips: Default::default(),
            status: String::new(),
            model_view: ModelView::None,
            cached_models: None,
            window: None,
            layout_file: std::env::var_os(LAYOUT_ENV).map(PathBuf::from),
            layout_written: String::new(),
            gui_context: None,
            model,
        };
        app.reload();
        app
    }

    /// Attach the context the host gave (tests pass their own).
    pub fn attach(&mut self, gui_context: GuiContext) {
        self.gui_context = Some(gui_context);
    }

    /// Take the persisted state as it is now (a project may have been loaded).
    fn reload(&mut self) {
        self.prompt_draft = self.model.prompt();
        self.model_draft = self.model.model_source();
        self.strips = std::array::from_fn(|k| SlotStrip::new(self.model.slot_directions(k)));
    }

    pub fn strips(&self) -> &[SlotStrip; SLOTS] {
        &self.strips
    }

    /// Draw the whole editor into `ui`.
    pub fn draw(&mut self, ui: &mut Ui) {
        let Some(gui_context) = self.gui_context.clone() else {
            ui.label("The editor is not attached to a plugin.");
            return;
        };
        let setter = gui_context.param_setter();
        let engine = self.model.engine();
        if let Some(engine) = &engine {
            if engine.model != ModelView::Busy {
                self.model_view = engine.model.clone();
            }
            ui.ctx().request_repaint_after(REFRESH);
        }
        if let Some(line) = self.model.status_line() {
            self.status = line;
        }
        let backend = engine.as_ref().map(|e| e.backend);
        egui::ScrollArea::both()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                self.header(ui, &setter, gui_context.plugin_api(), backend);
                self.banner(ui);
                engine_panel(ui, engine.as_ref(), &self.model_view);
                ui.separator();
                let model = self.model.clone();
                egui::Grid::new("slots")
                    .num_columns(2)
                    .spacing([14.0, 10.0])
                    .show(ui, |ui| {
                        for (slot, strip) in self.strips.iter_mut().enumerate() {
                            ui.vertical(|ui| {
                                ui.set_width(460.0);
                                strip.show(ui, &*model, &setter, slot, engine.as_ref());
                            });
                            if slot % 2 == 1 {
                                ui.end_row();
                            }
                        }
                    });
            });
        self.write_layout(ui.ctx());
    }

    fn header(
        &mut self,
        ui: &mut Ui,
        setter: &ParamSetter<'_>,
        api: PluginApi,
        backend: Option<&str>,
    ) {
        ui.horizontal(|ui| {
            ui.heading("musicrfm");
            match &self.model_view {
                ModelView::None | ModelView::Busy => {
                    ui.weak("No model loaded");
                }
                ModelView::Loading(name) => {
                    ui.spinner();
                    ui.label(format!("Loading {name}…"));
                }
                ModelView::Loaded {
                    name,
                    d_model,
                    blocks,
                } => {
                    ui.label(RichText::new(short_name(name)).strong())
                        .on_hover_text(name.as_str());
                    ui.weak(format!("width {d_model} · {blocks} blocks"));
                }
            }
            if let Some(backend) = backend {
                ui.weak(format!("· {backend}"));
            }
        });

        ui.horizontal(|ui| {
            ui.label("Model");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.model_draft)
                        .hint_text("model folder or repo id, e.g. facebook/musicgen-small")
                        .desired_width(380.0),
                )
                .on_hover_text(tips::MODEL);
            field.widget_info(|| crate::text_edit_info(&self.model_draft, "Model source"));
            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let cached = self
                .cached_models
                .get_or_insert_with(|| self.model.cached_models());
            let mut picked = None;
            egui::ComboBox::from_id_salt("cached-models")
                .selected_text("In the cache…")
                .width(150.0)
                .show_ui(ui, |ui| {
                    if cached.is_empty() {
                        ui.weak("No MusicGen models in the Hugging Face cache");
                    }
                    for id in cached.iter() {
                        if ui.selectable_label(false, id).clicked() {
                            picked = Some(id.clone());
                        }
                    }
                })
                .response
                .on_hover_text(tips::CACHED);
            let load = ui.button("Load").on_hover_text(tips::LOAD).clicked();
            let was_picked = picked.is_some();
            if let Some(id) = picked {
                self.model_draft = id;
            }
            if entered || load || was_picked {
                let source = self.model_draft.trim().to_owned();
                if source != self.model.model_source() {
                    self.model.set_model_source(&source);
                }
            }
        });

        ui.horizontal(|ui| {
            ui.label("Prompt");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.prompt_draft)
                        .hint_text("e.g. lofi piano with warm tape hiss")
                        .desired_width(470.0),
                )
                .on_hover_text(tips::PROMPT);
            field.widget_info(|| crate::text_edit_info(&self.prompt_draft, "Prompt text"));
            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let pending = self.prompt_draft != self.model.prompt();
            let apply = ui
                .add_enabled(pending, egui::Button::new("Apply prompt"))
                .on_hover_text(tips::PROMPT)
                .clicked();
            if (entered || apply) && pending {
                self.model.set_prompt(&self.prompt_draft);
            }
            if pending {
                ui.weak("edited: Enter applies");
            }
        });

        ui.horizontal(|ui| {
            if api == PluginApi::Standalone
                && let Some(transport) = self.model.transport()
            {
                if transport.playing {
                    if ui.button("Stop").on_hover_text(tips::STOP).clicked() {
                        self.model.set_playing(false);
                    }
                } else if ui.button("Play").on_hover_text(tips::PLAY).clicked() {
                    self.model.set_playing(true);
                }
                if ui.button("To start").on_hover_text(tips::REWIND).clicked() {
                    self.model.rewind();
                }
                ui.monospace(clock(transport.position_seconds));
                ui.separator();
            }
            ui.label("Master");
            Fader::new(self.model.master(), setter, "Master strength")
                .width(150.0)
                .tooltip(tips::MASTER)
                .show(ui);
            ui.label("Gate");
            Fader::new(self.model.gate(), setter, "Gate probability")
                .width(110.0)
                .tooltip(tips::GATE)
                .show(ui);
        });
    }

    /// Errors from the engine, naming the file or key at fault.
    fn banner(&self, ui: &mut Ui) {
        if let Some(error) = self.status.strip_prefix("Engine error: ") {
            egui::Frame::new()
                .fill(Color32::from_rgb(90, 25, 25))
                .inner_margin(6.0)
                .corner_radius(4.0)
                .show(ui, |ui| {
                    ui.set_width(ui.available_width());
                    ui.label(RichText::new(format!("Error: {error}")).color(Color32::WHITE))
                        .widget_info(|| {
                            egui::WidgetInfo::labeled(
                                egui::Role::Label,
                                true,
                                format!("Engine error: {error}"),
                            )
                        });
                });
        }
    }

    /// Dump the meters' rectangles for a screenshot test, when asked to.
    fn write_layout(&mut self, ctx: &egui::Context) {
        let Some(path) = &self.layout_file else {
            return;
        };
        let ppp = ctx.pixels_per_point();
        let rects: Vec<String> = self
            .strips
            .iter()
            .map(|s| match s.meter_rect {
                Some(r) => format!(
                    "[{:.0},{:.0},{:.0},{:.0}]",
                    r.min.x * ppp,
                    r.min.y * ppp,
                    r.max.x * ppp,
                    r.max.y * ppp
                ),
                None => "null".into(),
            })
            .collect();
        let json = format!("{{\"meters\":[{}]}}", rects.join(","));
        if json != self.layout_written && std::fs::write(path, &json).is_ok() {
            self.layout_written = json;
        }
    }
}

/// The engine panel: speed, buffer, latency, underruns, slides, position.
fn engine_panel(ui: &mut Ui, engine: Option<&EngineView>, model: &ModelView) {
    let Some(e) = engine else {
        ui.weak("Engine: not running (the host has not activated the plugin).");
        return;
    };
    ui.horizontal_wrapped(|ui| {
        let item = |ui: &mut Ui, name: &str, value: String, tip: &str| {
            ui.label(RichText::new(name).weak())
                .on_hover_text(tip)
                .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Label, true, name));
            ui.monospace(value).on_hover_text(tip);
            ui.add_space(8.0);
        };
        let rate = e
            .steps_per_second
            .map_or("–".to_owned(), |r| format!("{r:.1}"));
        item(ui, "steps/s", rate, tips::STEPS_PER_SECOND);
        let rtf = e
            .real_time_factor()
            .map_or("–".to_owned(), |f| format!("{f:.2}×"));
        let slow = e.real_time_factor().is_some_and(|f| f < 1.0);
        ui.label(RichText::new("real time").weak())
            .on_hover_text(tips::REAL_TIME);
        let rtf_text = RichText::new(rtf).monospace();
        ui.label(if slow {
            rtf_text.color(ERROR_COLOR)
        } else {
            rtf_text
        })
        .on_hover_text(tips::REAL_TIME);
        ui.add_space(8.0);
        item(
            ui,
            "buffer",
            format!("{:.0} ms", e.buffered_seconds * 1000.0),
            tips::BUFFER,
        );
        item(
            ui,
            "latency",
            format!("{:.0} ms", e.latency_seconds * 1000.0),
            tips::LATENCY,
        );
        item(ui, "underruns", e.underruns.to_string(), tips::UNDERRUNS);
        item(ui, "slides", e.slides.to_string(), tips::SLIDES);
        item(
            ui,
            "step",
            format!("{} ({})", e.step, clock(e.step as f64 / STEPS_PER_SECOND)),
            tips::POSITION,
        );
        if e.running && slow && e.on_cpu() {
            ui.colored_label(
                ERROR_COLOR,
                "slower than real time: try the weights parameter at q4, a shorter context, or an offline bounce",
            )
            .on_hover_text(tips::SLOW_ON_CPU);
        }
        if e.running && e.prompt_pending {
            ui.weak("encoding the new prompt…")
                .on_hover_text(tips::PROMPT_PENDING);
        }
        if !e.running {
            let why = match model {
                ModelView::Loaded { .. } => "idle (no prompt yet, stopped, or waiting)",
                ModelView::Loading(_) => "loading the model",
                _ => "no model",
            };
            ui.weak(why);
        }
    });
}

/// Accessibility info naming a text field `name` (what screen readers and tests find it by).
fn text_edit_info(text: &str, name: impl Into<String>) -> egui::WidgetInfo {
    let mut info = egui::WidgetInfo::text_edit(true, text, text, "");
    info.label = Some(name.into());
    info
}

/// `m:ss.s`
fn clock(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    format!("{}:{:04.1}", (seconds / 60.0) as u64, seconds % 60.0)
}

/// The last path component of a model source, or the repo id itself.
fn short_name(source: &str) -> &str {
    let trimmed = source.trim_end_matches('/');
    if trimmed.starts_with('/') || trimmed.starts_with('.') {
        trimmed.rsplit('/').next().unwrap_or(trimmed)
    } else {
        trimmed
    }
}

impl<M: EditorModel> NiceEguiApp for EditorApp<M> {
    fn build(
        &mut self,
        _egui_ctx: egui::Context,
        nice_gui_ctx: GuiContext,
        frame: &mut Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        // The state may have been restored since the editor was last open.
        self.reload();
        self.cached_models = None;
        self.gui_context = Some(nice_gui_ctx);
        // A size saved with the project, when the window opens at another one.
        let (w, h) = self.model.editor_size();
        if let Some(window) = &self.window {
            let now = window.logical_size();
            if (now.width - w).abs() > 1.0 || (now.height - h).abs() > 1.0 {
                let _ = frame
                    .baseview_window()
                    .resize(nice_plug::editor::dpi::LogicalSize::new(
                        f64::from(w),
                        f64::from(h),
                    ));
            }
        }
        Ok(())
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut Frame) {
        self.draw(ui);
    }

    fn resized(&mut self, new_size: nice_plug_egui::baseview::WindowSize) {
        let size = new_size.logical;
        self.model
            .set_editor_size((size.width as f32, size.height as f32));
    }

    fn editor_closed(&mut self) {
        self.gui_context = None;
    }
}

/// Create the editor for a plugin whose parameters implement [`EditorModel`]: resizable, at
/// the size persisted with the project.
pub fn create_editor<M: EditorModel>(
    model: Arc<M>,
    repaint: RepaintNotifier,
) -> Option<EguiEditor<EditorApp<M>>> {
    let (w, h) = model.editor_size();
    let state = EguiEditorState::from_size(
        nice_plug::editor::dpi::LogicalSize::new(f64::from(w), f64::from(h)),
        1.0,
    );
    let mut app = EditorApp::new(model);
    app.window = Some(state.clone());
    let hint = nice_plug::editor::ResizeHint::resizable().with_min_logical_size(
        nice_plug::editor::dpi::LogicalSize::new(MIN_SIZE.0, MIN_SIZE.1),
    );
    create_egui_editor(
        state,
        repaint,
        EguiNiceSettings::new()
            .with_tile("musicrfm")
            .with_resize_hint(hint),
        app,
    )
}
