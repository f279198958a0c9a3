//! One slot strip: the directions file (with a picker), its class, the strength fader (the
//! automatable parameter itself), the schedule shape and length, the α(t) preview and the live
//! concept meter.

use std::path::PathBuf;

use egui::{Color32, CornerRadius, Pos2, Rect, RichText, Sense, Stroke, Ui, Vec2};
use nice_plug::prelude::{Enum, ParamSetter};

use crate::directions_info::{DirectionsInfo, PickerEntry, list_folder};
use crate::model::{EditorModel, EngineView, ModelView, STEPS_PER_SECOND, SlotDirections};
use crate::{fader::Fader, tips};

/// Seconds of α(t) the preview shows.
pub const PREVIEW_SECONDS: f64 = 8.0;
const PREVIEW_STEPS: usize = (PREVIEW_SECONDS * STEPS_PER_SECOND) as usize;
pub const ERROR_COLOR: Color32 = Color32::from_rgb(235, 90, 80);

/// The editor's state of one strip.
#[derive(Default)]
pub struct SlotStrip {
    /// The directions as edited (the file field commits on Enter or when it loses focus).
    pub draft: SlotDirections,
    /// The file last read, and what reading it gave.
    pub info: Option<(String, Result<DirectionsInfo, String>)>,
    /// The picker's folder and listing, while it is open.
    picker: Option<(PathBuf, Vec<crate::directions_info::PickerEntry>)>,
    alpha: Vec<f32>,
    /// Where the meter was drawn this frame (screen points), for layout dumps.
    pub meter_rect: Option<Rect>,
}

impl SlotStrip {
    pub fn new(draft: SlotDirections) -> Self {
        let mut strip = Self {
            draft,
            ..Self::default()
        };
        strip.refresh_info();
        strip
    }

    /// Re-read the file if the committed path changed.
    pub fn refresh_info(&mut self) {
        let file = self.draft.file.trim().to_owned();
        if file.is_empty() {
            self.info = None;
        } else if self.info.as_ref().is_none_or(|(read, _)| *read != file) {
            let info = DirectionsInfo::read(std::path::Path::new(&file));
            self.info = Some((file, info));
        }
    }

    /// The file's info when it was read without error.
    pub fn directions(&self) -> Option<&DirectionsInfo> {
        self.info.as_ref().and_then(|(_, r)| r.as_ref().ok())
    }

    fn commit<M: EditorModel>(&mut self, model: &M, slot: usize) {
        self.refresh_info();
        // A file whose classes do not include the slot's class starts on its first class.
        if let Some(info) = self.directions()
            && info.class_index(&self.draft.class).is_none()
            && let Some(first) = info.classes.first()
        {
            self.draft.class = first.clone();
        }
        model.set_slot_directions(slot, self.draft.clone());
    }

    pub fn show<M: EditorModel>(
        &mut self,
        ui: &mut Ui,
        model: &M,
        setter: &ParamSetter<'_>,
        slot: usize,
        engine: Option<&EngineView>,
    ) {
        let k = slot + 1;
        ui.horizontal(|ui| {
            ui.label(RichText::new(format!("Slot {k}")).strong());
            let file = ui
                .add(
                    egui::TextEdit::singleline(&mut self.draft.file)
                        .hint_text("directions file (.safetensors)")
                        .desired_width(ui.available_width() - 150.0),
                )
                .on_hover_text(tips::FILE);
            file.widget_info(|| crate::text_edit_info(&self.draft.file, format!("Slot {k} file")));
            if file.lost_focus() {
                self.commit(model, slot);
            }
            let browse = ui
                .selectable_label(self.picker.is_some(), "Browse…")
                .on_hover_text(tips::BROWSE);
            if browse.clicked() {
                self.picker = match self.picker {
                    Some(_) => None,
                    None => Some(list_folder(&self.draft.file)),
                };
            }
            if ui
                .checkbox(&mut self.draft.midi, "MIDI")
                .on_hover_text(tips::MIDI)
                .changed()
            {
                self.commit(model, slot);
            }
        });

        if let Some(chosen) = self.picker_ui(ui, k) {
            self.draft.file = chosen.display().to_string();
            self.picker = None;
            self.commit(model, slot);
        }

        // The file's class and what it was made for, or why it cannot be used.
        let width = match engine.map(|e| &e.model) {
            Some(ModelView::Loaded { d_model, .. }) => Some(*d_model),
            _ => None,
        };
        let mut class_changed = false;
        ui.horizontal(|ui| match &self.info {
            None => {
                ui.weak("Empty: pick a directions file to steer with.");
            }
            Some((_, Err(error))) => {
                ui.colored_label(ERROR_COLOR, format!("Error: {error}"));
            }
            Some((_, Ok(info))) => {
                if self.draft.midi {
                    ui.label(format!("{}: played from MIDI notes", info.concept));
                } else {
                    let selected = info
                        .class_index(&self.draft.class)
                        .map(|i| info.classes[i].clone())
                        .unwrap_or_else(|| format!("{} (not in file)", self.draft.class));
                    let combo = egui::ComboBox::from_id_salt(("class", slot))
                        .selected_text(selected)
                        .width(110.0)
                        .show_ui(ui, |ui| {
                            for class in &info.classes {
                                if ui
                                    .selectable_label(self.draft.class == *class, class)
                                    .clicked()
                                {
                                    self.draft.class = class.clone();
                                    class_changed = true;
                                }
                            }
                        });
                    combo.response.widget_info(|| {
                        egui::WidgetInfo::labeled(
                            egui::Role::ComboBox,
                            true,
                            format!("Slot {k} class"),
                        )
                    });
                    combo.response.on_hover_text(tips::CLASS);
                }
                match width.and_then(|w| info.mismatch(w)) {
                    Some(why) => {
                        ui.colored_label(ERROR_COLOR, format!("Error: {why}"));
                    }
                    None => {
                        ui.weak(format!(
                            "{} · {} classes · for {} (width {})",
                            info.concept,
                            info.classes.len(),
                            info.model,
                            info.d_model
                        ));
                    }
                }
            }
        });
        if class_changed {
            model.set_slot_directions(slot, self.draft.clone());
        }

        ui.horizontal(|ui| {
            Fader::new(
                model.slot_strength(slot),
                setter,
                format!("Slot {k} strength"),
            )
            .width(150.0)
            .origin(0.0)
            .tooltip(tips::STRENGTH)
            .show(ui);
            let shape = model.slot_shape(slot);
            let current = shape.value();
            let names = M::Shape::variants();
            let combo = egui::ComboBox::from_id_salt(("shape", slot))
                .selected_text(names[current.to_index()])
                .width(90.0)
                .show_ui(ui, |ui| {
                    for (i, name) in names.iter().enumerate() {
                        if ui
                            .selectable_label(i == current.to_index(), *name)
                            .clicked()
                        {
                            setter.begin_set_parameter(shape);
                            setter.set_parameter(shape, M::Shape::from_index(i));
                            setter.end_set_parameter(shape);
                        }
                    }
                });
            combo.response.widget_info(|| {
                egui::WidgetInfo::labeled(egui::Role::ComboBox, true, format!("Slot {k} shape"))
            });
            combo.response.on_hover_text(tips::SHAPE);
            Fader::new(model.slot_length(slot), setter, format!("Slot {k} length"))
                .width(80.0)
                .tooltip(tips::LENGTH)
                .show(ui);
        });

        ui.horizontal(|ui| {
            let from = engine.map_or(0, |e| e.step);
            self.alpha.resize(PREVIEW_STEPS, 0.0);
            model.alpha_preview(slot, from, &mut self.alpha);
            let steered = self.directions().is_some() && !self.draft.midi;
            alpha_plot(ui, &self.alpha, model.gate().value(), steered);
            self.meter_rect =
                Some(self.meter_ui(ui, k, engine.and_then(|e| e.meters[slot].as_ref())));
        });
    }

    /// The picker's listing; returns a file the user picked.
    fn picker_ui(&mut self, ui: &mut Ui, k: usize) -> Option<PathBuf> {
        let (folder, entries) = self.picker.as_ref()?;
        let mut chosen = None;
        let mut navigate = None;
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.weak(folder.display().to_string());
                if let Some(parent) = folder.parent()
                    && ui.small_button("Up").clicked()
                {
                    navigate = Some(parent.to_owned());
                }
            });
            egui::ScrollArea::vertical()
                .id_salt(("picker", k))
                .max_height(110.0)
                .show(ui, |ui| {
                    if entries.is_empty() {
                        ui.weak("No directions files here.");
                    }
                    for entry in entries {
                        match entry {
                            PickerEntry::Folder(p) => {
                                let name = p.file_name().unwrap_or_default().to_string_lossy();
                                if ui.selectable_label(false, format!("{name}/")).clicked() {
                                    navigate = Some(p.clone());
                                }
                            }
                            PickerEntry::File(p) => {
                                let name = p.file_name().unwrap_or_default().to_string_lossy();
                                if ui.selectable_label(false, name).clicked() {
                                    chosen = Some(p.clone());
                                }
                            }
                        }
                    }
                });
        });
        if let Some(folder) = navigate {
            self.picker = Some(list_folder(&folder.display().to_string()));
            if let Some((listed, _)) = &self.picker
                && *listed != folder
            {
                // The folder could not be listed as itself (e.g. no permission).
                self.picker = Some((folder, Vec::new()));
            }
        }
        chosen
    }

    /// The live concept meter: one bar per class, the selected class highlighted. Returns
    /// the rectangle it occupies.
    fn meter_ui(&self, ui: &mut Ui, k: usize, meter: Option<&crate::model::MeterView>) -> Rect {
        let size = Vec2::new(ui.available_width().max(120.0), 56.0);
        let (rect, response) = ui.allocate_exact_size(size, Sense::hover());
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, CornerRadius::same(3), ui.visuals().extreme_bg_color);
        let text_color = ui.visuals().weak_text_color();
        let mut message = |text: &str| {
            ui.put(rect, egui::Label::new(RichText::new(text).weak().small()));
        };
        match (self.directions(), meter) {
            (None, _) => {}
            (Some(info), _) if !info.probe => {
                message("No concept meter: no probe beside this file")
            }
            (Some(_), None) => message("Concept meter: waiting for the engine"),
            (Some(info), Some(meter)) => {
                let n = meter.scores.len().max(1);
                let bar_w = rect.width() / n as f32;
                let selected = info.class_index(&self.draft.class);
                for (i, score) in meter.scores.iter().enumerate() {
                    let p = if score.is_finite() {
                        score.clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let x0 = rect.left() + i as f32 * bar_w;
                    let bar = Rect::from_min_max(
                        Pos2::new(x0 + 1.0, rect.bottom() - 12.0 - p * (rect.height() - 14.0)),
                        Pos2::new(x0 + bar_w - 1.0, rect.bottom() - 12.0),
                    );
                    let color = if Some(i) == selected {
                        Color32::from_rgb(250, 180, 60)
                    } else {
                        Color32::from_rgb(90, 150, 220)
                    };
                    painter.rect_filled(bar, CornerRadius::same(1), color);
                    if bar_w >= 14.0 {
                        let name = info.classes.get(i).map_or("", String::as_str);
                        painter.text(
                            Pos2::new(x0 + bar_w / 2.0, rect.bottom() - 1.0),
                            egui::Align2::CENTER_BOTTOM,
                            name,
                            egui::FontId::proportional(9.0),
                            text_color,
                        );
                    }
                }
            }
        }
        let (label, tip) = match (self.directions(), meter) {
            (Some(info), Some(meter)) => {
                let readings: Vec<String> = info
                    .classes
                    .iter()
                    .zip(&meter.scores)
                    .map(|(class, p)| format!("{class} {:.0} %", p * 100.0))
                    .collect();
                (
                    format!("Slot {k} meter: {}", readings.join(", ")),
                    format!("{}\n{}", crate::tips::METER, readings.join("\n")),
                )
            }
            _ => (format!("Slot {k} meter"), crate::tips::METER.to_owned()),
        };
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Meter, true, &label));
        response.on_hover_text(tip);
        rect
    }
}

/// α(t) over the next seconds, with the gate probability.
fn alpha_plot(ui: &mut Ui, alpha: &[f32], gate: f32, steered: bool) {
    let (rect, response) = ui.allocate_exact_size(Vec2::new(170.0, 56.0), Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, CornerRadius::same(3), ui.visuals().extreme_bg_color);
    let peak = alpha.iter().fold(0.0f32, |m, a| m.max(a.abs())).max(0.25);
    let y = |a: f32| rect.center().y - a / peak * (rect.height() / 2.0 - 4.0);
    painter.line_segment(
        [
            Pos2::new(rect.left(), y(0.0)),
            Pos2::new(rect.right(), y(0.0)),
        ],
        Stroke::new(1.0, ui.visuals().weak_text_color().gamma_multiply(0.5)),
    );
    if steered && alpha.len() > 1 {
        let dx = rect.width() / (alpha.len() - 1) as f32;
        let points: Vec<Pos2> = alpha
            .iter()
            .enumerate()
            .map(|(i, a)| Pos2::new(rect.left() + i as f32 * dx, y(*a)))
            .collect();
        let color = Color32::from_rgb(120, 220, 140).gamma_multiply(0.35 + 0.65 * gate);
        painter.add(egui::Shape::line(points, Stroke::new(1.5, color)));
    }
    let font = egui::FontId::proportional(10.0);
    painter.text(
        rect.left_top() + Vec2::new(3.0, 1.0),
        egui::Align2::LEFT_TOP,
        format!("α next {PREVIEW_SECONDS:.0} s  ±{peak:.2}"),
        font.clone(),
        ui.visuals().weak_text_color(),
    );
    painter.text(
        rect.right_bottom() - Vec2::new(3.0, 1.0),
        egui::Align2::RIGHT_BOTTOM,
        format!("gate {:.0} %", gate * 100.0),
        font,
        ui.visuals().weak_text_color(),
    );
    response.on_hover_text(crate::tips::ALPHA);
}
