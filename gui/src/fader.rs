//! A fader for one automatable (float) parameter. It writes through the host-facing [`ParamSetter`]
//! with automation gestures: begin on grab, set while moving, end on release (a wheel notch, a
//! key press or a double-click is one whole gesture), so a host records it as automation.
//!
//! Habits: drag (relative, so grabbing never jumps the value); Shift while dragging, scrolling
//! or pressing keys = 10× finer; mouse wheel over it; arrow keys / Page Up / Page Down when
//! focused (click or Tab); double-click or Delete resets to the default.

use egui::{Align2, Color32, CornerRadius, Event, FontId, Key, Response, Sense, Stroke, Ui, Vec2};
use nice_plug::prelude::{FloatParam, Param, ParamSetter};

/// Normalised change per wheel notch or arrow key press.
const STEP: f32 = 0.01;
/// Normalised change per Page Up / Page Down.
const PAGE: f32 = 0.1;
/// Shift makes every gesture this much finer.
const FINE: f32 = 0.1;

pub struct Fader<'a> {
    param: &'a FloatParam,
    setter: &'a ParamSetter<'a>,
    label: String,
    width: f32,
    tooltip: Option<&'a str>,
    /// Draw the fill from this normalised value (the plain 0 of a bipolar range).
    origin: f32,
}

impl<'a> Fader<'a> {
    /// `label` is what screen readers (and the tests) find it by.
    pub fn new(
        param: &'a FloatParam,
        setter: &'a ParamSetter<'a>,
        label: impl Into<String>,
    ) -> Self {
        Self {
            param,
            setter,
            label: label.into(),
            width: 160.0,
            tooltip: None,
            origin: 0.0,
        }
    }

    pub fn width(mut self, width: f32) -> Self {
        self.width = width;
        self
    }

    pub fn tooltip(mut self, text: &'a str) -> Self {
        self.tooltip = Some(text);
        self
    }

    /// Fill from the plain value `plain` (e.g. 0 for a strength that can be negative).
    pub fn origin(mut self, plain: f32) -> Self {
        self.origin = self.param.preview_normalized(plain);
        self
    }

    /// Set to `normalized` as one whole gesture.
    fn gesture(&self, normalized: f32) {
        let plain = self.param.preview_plain(normalized.clamp(0.0, 1.0));
        self.setter.begin_set_parameter(self.param);
        self.setter.set_parameter(self.param, plain);
        self.setter.end_set_parameter(self.param);
    }

    pub fn show(self, ui: &mut Ui) -> Response {
        let height = ui.spacing().interact_size.y.max(18.0);
        let (rect, mut response) =
            ui.allocate_exact_size(Vec2::new(self.width, height), Sense::click_and_drag());
        let id = response.id;
        let current = self.param.unmodulated_normalized_value();
        let fine = ui.input(|i| i.modifiers.shift);
        let scale = if fine { FINE } else { 1.0 };

        // Drag: relative, accumulated in memory so Shift can change the rate mid-drag.
        if response.drag_started() {
            ui.memory_mut(|m| m.data.insert_temp(id, current));
            self.setter.begin_set_parameter(self.param);
            response.request_focus();
        }
        if response.dragged() {
            let dx = response.drag_delta().x;
            if dx != 0.0 {
                let start: f32 = ui.memory_mut(|m| *m.data.get_temp_mut_or(id, current));
                let value = (start + dx / self.width.max(1.0) * scale).clamp(0.0, 1.0);
                ui.memory_mut(|m| m.data.insert_temp(id, value));
                self.setter
                    .set_parameter(self.param, self.param.preview_plain(value));
                response.mark_changed();
            }
        }
        if response.drag_stopped() {
            self.setter.end_set_parameter(self.param);
            ui.memory_mut(|m| m.data.remove::<f32>(id));
        }
        if response.clicked() {
            response.request_focus();
        }

        // Double-click (or Delete while focused): back to the default.
        let reset = response.double_clicked()
            || (response.has_focus()
                && ui.input(|i| i.key_pressed(Key::Delete) || i.key_pressed(Key::Backspace)));
        if reset {
            self.gesture(self.param.default_normalized_value());
            response.mark_changed();
        }

        // Wheel over the fader: one step per notch; the wheel is taken from any scroll area.
        if response.hovered() && !response.dragged() {
            let notches: f32 = ui.input(|i| {
                i.events
                    .iter()
                    .filter_map(|e| match e {
                        Event::MouseWheel { delta, .. } => Some(delta.y + delta.x),
                        _ => None,
                    })
                    .map(f32::signum)
                    .sum()
            });
            if notches != 0.0 {
                ui.input_mut(|i| {
                    i.smooth_scroll_delta = Vec2::ZERO;
                });
                self.gesture(current + notches * STEP * scale);
                response.mark_changed();
            }
        }

        // Keys while focused.
        if response.has_focus() {
            let delta: f32 = ui.input(|i| {
                let mut d = 0.0;
                if i.key_pressed(Key::ArrowRight) || i.key_pressed(Key::ArrowUp) {
                    d += STEP;
                }
                if i.key_pressed(Key::ArrowLeft) || i.key_pressed(Key::ArrowDown) {
                    d -= STEP;
                }
                if i.key_pressed(Key::PageUp) {
                    d += PAGE;
                }
                if i.key_pressed(Key::PageDown) {
                    d -= PAGE;
                }
                d
            });
            if delta != 0.0 {
                self.gesture(current + delta * scale);
                response.mark_changed();
            }
        }

        let value = self.param.unmodulated_normalized_value();
        let text = self.param.normalized_value_to_string(value, true);
        if ui.is_rect_visible(rect) {
            let visuals = ui.style().interact(&response);
            let painter = ui.painter();
            painter.rect(
                rect,
                CornerRadius::same(3),
                ui.visuals().extreme_bg_color,
                visuals.bg_stroke,
                egui::StrokeKind::Inside,
            );
            let x = |n: f32| rect.left() + n * rect.width();
            let (a, b) = if value >= self.origin {
                (self.origin, value)
            } else {
                (value, self.origin)
            };
            let fill = egui::Rect::from_x_y_ranges(x(a)..=x(b), rect.y_range())
                .shrink2(Vec2::new(0.0, 2.0));
            painter.rect_filled(fill, CornerRadius::same(2), ui.visuals().selection.bg_fill);
            painter.line_segment(
                [
                    egui::pos2(x(value), rect.top()),
                    egui::pos2(x(value), rect.bottom()),
                ],
                Stroke::new(2.0, visuals.fg_stroke.color),
            );
            if response.has_focus() {
                painter.rect_stroke(
                    rect.expand(1.0),
                    CornerRadius::same(3),
                    Stroke::new(1.0, Color32::from_rgb(120, 170, 255)),
                    egui::StrokeKind::Outside,
                );
            }
            painter.text(
                rect.center(),
                Align2::CENTER_CENTER,
                &text,
                FontId::proportional(12.0),
                visuals.text_color(),
            );
        }
        let label = self.label.clone();
        response.widget_info(|| {
            egui::WidgetInfo::slider(
                true,
                f64::from(self.param.unmodulated_plain_value()),
                &label,
            )
        });
        match self.tooltip {
            Some(tip) => response.on_hover_text(tip),
            None => response,
        }
    }
}
