//! The musicrfm editor, drawn with egui inside the host's window (nice-plug-egui / baseview).
//!
//! The editor knows nothing about the plugin struct: the plugin hands it an [`EditorModel`], the
//! small view of its parameters and persisted state that the panel edits. That keeps the
//! dependency arrow `gui ← plugin` pointing one way.

use std::sync::Arc;

use nice_plug::context::gui::GuiContext;
use nice_plug::prelude::FloatParam;
use nice_plug_egui::widgets::ParamSlider;
use nice_plug_egui::{
    EguiEditor, EguiEditorState, EguiNiceSettings, Frame, NiceEguiApp, RepaintNotifier,
    create_egui_editor,
};
use parking_lot::RwLock;

/// Logical size of the editor window.
pub const EDITOR_SIZE: (f64, f64) = (560.0, 640.0);

/// Slots of directions the editor shows.
pub const SLOTS: usize = 8;

/// What the editor reads and edits. Implemented by the plugin's parameter struct.
pub trait EditorModel: Send + Sync + 'static {
    /// Scales every slot's strength.
    fn master(&self) -> &FloatParam;
    /// Slot `slot`'s (0-based) automatable strength.
    fn slot_strength(&self, slot: usize) -> &FloatParam;
    /// The persisted model source (directory or repo id). GUI writes; the audio thread never.
    fn model_source(&self) -> &RwLock<String>;
    /// The persisted text prompt. The GUI thread writes it; the audio thread never touches it.
    fn prompt(&self) -> &RwLock<String>;
    /// One line on the engine's state (model, errors).
    fn engine_status(&self) -> String;
    /// Slot `slot`'s persisted directions: file, class, and whether it is in MIDI notes mode.
    fn slot_directions(&self, slot: usize) -> SlotDirections;
    /// Replace slot `slot`'s persisted directions (the GUI thread; never the audio thread).
    fn set_slot_directions(&self, slot: usize, directions: SlotDirections);
}

/// What the editor shows and edits of one slot's persisted directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotDirections {
    /// A directions file ("" = the slot is empty).
    pub file: String,
    /// A class name or 0-based index (unused in MIDI notes mode).
    pub class: String,
    /// MIDI notes mode: the file is a 12-class notes file played from MIDI.
    pub midi: bool,
}

/// The egui application behind the editor window.
pub struct EditorApp<M: EditorModel> {
    model: Arc<M>,
    /// Set in [`NiceEguiApp::build`], when the host opens the window.
    gui_context: Option<GuiContext>,
    /// The prompt as typed; committed to the persisted state when the text field changes.
    prompt_draft: String,
    /// The model source as typed; committed when the field loses focus.
    model_draft: String,
    /// Each slot's directions as edited; committed when a field loses focus or the box toggles.
    slot_drafts: [SlotDirections; SLOTS],
}

impl<M: EditorModel> EditorApp<M> {
    pub fn new(model: Arc<M>) -> Self {
        let prompt_draft = model.prompt().read().clone();
        let model_draft = model.model_source().read().clone();
        let slot_drafts = std::array::from_fn(|k| model.slot_directions(k));
        Self {
            model,
            gui_context: None,
            prompt_draft,
            model_draft,
            slot_drafts,
        }
    }
}

impl<M: EditorModel> NiceEguiApp for EditorApp<M> {
    fn build(
        &mut self,
        _egui_ctx: egui::Context,
        nice_gui_ctx: GuiContext,
        _frame: &mut Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        // The state may have been restored since the editor was last open.
        self.prompt_draft = self.model.prompt().read().clone();
        self.model_draft = self.model.model_source().read().clone();
        self.slot_drafts = std::array::from_fn(|k| self.model.slot_directions(k));
        self.gui_context = Some(nice_gui_ctx);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut Frame) {
        ui.heading("musicrfm");
        ui.label("MusicGen, steered by RFM concept directions.");
        ui.separator();

        ui.label("Model (directory or Hugging Face repo id)");
        if ui
            .add(egui::TextEdit::singleline(&mut self.model_draft))
            .lost_focus()
        {
            *self.model.model_source().write() = self.model_draft.clone();
        }

        ui.label("Prompt");
        if ui
            .add(egui::TextEdit::multiline(&mut self.prompt_draft).desired_rows(3))
            .changed()
        {
            *self.model.prompt().write() = self.prompt_draft.clone();
        }

        ui.add_space(8.0);
        if let Some(gui_context) = &self.gui_context {
            let setter = gui_context.param_setter();
            ui.label("Master");
            ui.add(ParamSlider::for_param(self.model.master(), &setter).with_width(300.0));
            egui::ScrollArea::vertical()
                .max_height(400.0)
                .show(ui, |ui| {
                    for slot in 0..SLOTS {
                        ui.label(format!("Slot {} strength", slot + 1));
                        let param = self.model.slot_strength(slot);
                        ui.add(ParamSlider::for_param(param, &setter).with_width(300.0));
                        let draft = &mut self.slot_drafts[slot];
                        let committed = ui
                            .horizontal(|ui| {
                                let file = ui.add(
                                    egui::TextEdit::singleline(&mut draft.file)
                                        .hint_text("directions file")
                                        .desired_width(220.0),
                                );
                                let class = ui.add(
                                    egui::TextEdit::singleline(&mut draft.class)
                                        .hint_text("class")
                                        .desired_width(80.0),
                                );
                                let midi = ui.checkbox(&mut draft.midi, "MIDI notes");
                                file.lost_focus() || class.lost_focus() || midi.changed()
                            })
                            .inner;
                        if committed {
                            self.model.set_slot_directions(slot, draft.clone());
                        }
                    }
                });
        }

        ui.add_space(8.0);
        ui.separator();
        ui.label(self.model.engine_status());
    }

    fn editor_closed(&mut self) {
        self.gui_context = None;
    }
}

/// Create the editor for a plugin whose parameters implement [`EditorModel`].
pub fn create_editor<M: EditorModel>(
    model: Arc<M>,
    repaint: RepaintNotifier,
) -> Option<EguiEditor<EditorApp<M>>> {
    let (w, h) = EDITOR_SIZE;
    create_egui_editor(
        EguiEditorState::from_size(nice_plug::editor::dpi::LogicalSize::new(w, h), 1.0),
        repaint,
        EguiNiceSettings::new().with_tile("musicrfm"),
        EditorApp::new(model),
    )
}
