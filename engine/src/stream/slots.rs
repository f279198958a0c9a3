//! The stream's steering: up to [`SLOTS`] directions and one notes file, each steered by
//! `Schedule::External` with η = 1, so a step's coefficient is exactly `master · strength`.
//! Steers are added in a fixed order (slots 0..8, then the notes' classes), so the gates,
//! keyed by steer index, do not depend on the order the slots were set in.
//!
//! Owned by the engine thread.

use std::path::Path;

use directions::DirectionsFile;

use crate::model::MusicGen;
use crate::steering::{LayerWeights, Schedule, SteeringError, SteeringPlan, resolve_class};

use super::{ControlFrame, NOTES, SLOTS, SlotDirection, StreamError};

/// A directions file read and resolved for one slot (or the notes, all classes).
struct Loaded {
    spec: SlotDirection,
    file: DirectionsFile,
    /// The classes steered, in steer order.
    classes: Vec<usize>,
    layers: LayerWeights,
}

#[derive(Default)]
pub(super) struct Steering {
    slots: [Option<Loaded>; SLOTS],
    notes: Option<Loaded>,
    plan: Option<SteeringPlan>,
    /// The plan's steer index of each slot and each note.
    slot_steer: [Option<usize>; SLOTS],
    note_steer: [Option<usize>; NOTES],
}

fn read(spec: &SlotDirection, slot: usize, notes: bool) -> Result<Loaded, StreamError> {
    let fail = |error: SteeringError| StreamError::Slot {
        slot,
        file: spec.file.clone(),
        error: Box::new(error),
    };
    let file = DirectionsFile::read(&spec.file).map_err(|e| fail(e.into()))?;
    let classes = if notes {
        (0..file.classes.len().min(NOTES)).collect()
    } else {
        vec![resolve_class(&file, &spec.class, &spec.file).map_err(fail)?]
    };
    let layers = spec
        .layers
        .clone()
        .unwrap_or_else(|| LayerWeights::default_for(&file));
    Ok(Loaded {
        spec: spec.clone(),
        file,
        classes,
        layers,
    })
}

impl Steering {
    /// Set or clear slot `slot` (`SLOTS` = the notes); a file that fails to load or does not
    /// fit `model` leaves the previous setting in place.
    pub fn set(
        &mut self,
        model: Option<&MusicGen>,
        slot: usize,
        spec: Option<SlotDirection>,
        seed: u64,
    ) -> Result<(), StreamError> {
        if slot > SLOTS {
            return Err(StreamError::NoSuchSlot(slot));
        }
        let loaded = spec.map(|s| read(&s, slot, slot == SLOTS)).transpose()?;
        let target = if slot == SLOTS {
            &mut self.notes
        } else {
            &mut self.slots[slot]
        };
        let previous = std::mem::replace(target, loaded);
        if let Some(model) = model
            && let Err(e) = self.rebuild(model, seed)
        {
            let target = if slot == SLOTS {
                &mut self.notes
            } else {
                &mut self.slots[slot]
            };
            *target = previous;
            self.rebuild(model, seed)?;
            return Err(e);
        }
        if model.is_none() {
            self.plan = None; // built when a model arrives
        }
        Ok(())
    }

    /// Rebuild the plan for `model` and `seed` (a new model, seed or slot).
    pub fn rebuild(&mut self, model: &MusicGen, seed: u64) -> Result<(), StreamError> {
        let mut plan = SteeringPlan::new(
            model.decoder.num_blocks(),
            model.decoder.d_model(),
            seed,
            &model.device,
        );
        let mut slot_steer = [None; SLOTS];
        let mut note_steer = [None; NOTES];
        let entries = self
            .slots
            .iter()
            .enumerate()
            .chain(std::iter::once((SLOTS, &self.notes)));
        for (slot, loaded) in entries {
            let Some(loaded) = loaded else { continue };
            for (i, &class) in loaded.classes.iter().enumerate() {
                let steer = plan
                    .add(
                        &loaded.file,
                        Path::new(&loaded.spec.file),
                        class,
                        1.0,
                        Schedule::External,
                        &loaded.layers,
                        loaded.spec.gate,
                    )
                    .map_err(|error| StreamError::Slot {
                        slot,
                        file: loaded.spec.file.clone(),
                        error: Box::new(error),
                    })?;
                if slot == SLOTS {
                    note_steer[i] = Some(steer);
                } else {
                    slot_steer[slot] = Some(steer);
                }
            }
        }
        self.plan = Some(plan);
        self.slot_steer = slot_steer;
        self.note_steer = note_steer;
        Ok(())
    }

    /// The plan with `control`'s values set for its step (`rebuild` must have run).
    pub fn plan_for(&mut self, control: &ControlFrame) -> &mut SteeringPlan {
        let plan = self
            .plan
            .as_mut()
            .expect("the plan is built before a session starts");
        for (steer, strength) in self.slot_steer.iter().zip(control.slots) {
            if let Some(steer) = *steer {
                plan.set_external(steer, control.master * strength);
            }
        }
        for (steer, strength) in self.note_steer.iter().zip(control.notes) {
            if let Some(steer) = *steer {
                plan.set_external(steer, control.master * strength);
            }
        }
        plan
    }
}
