//! Prompt conditions computed ahead of the step that takes them.
//!
//! A prompt's condition (T5, the projection, every block's cross-attention keys and values:
//! [`MusicGen::condition`]) costs several decoder steps on a CPU (about 90–150 ms for
//! musicgen-small on two cores). Computed inside the step that takes the new prompt, it is one
//! long step, longer than the latency's cushion: a gap in the audio. The engine thread starts
//! it here when the prompt command arrives and advances it one piece at a time (a T5 block,
//! the projection, one decoder block's keys and values: [`MusicGen::advance_condition`]) when
//! it has nothing else to do and after each step, on the pool that runs the steps (a thread of
//! its own would preempt the steps' threads and stall their joins); the step that takes the
//! prompt only swaps it in. The last two conditions stay, so a seek or a restart with one of
//! those prompts runs no T5.
//!
//! The pieces are the operations [`MusicGen::condition`] runs, in its order: the condition
//! built here is the one the step would have computed, bit for bit.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::LoadError;
use crate::model::{ConditionBuild, MusicGen, TextCondition};

/// Conditions kept: the prompt in effect (whose tensors its session shares) and the one
/// before, for a seek back across a prompt change or a prompt tried and taken back. Each holds
/// every block's text keys and values: about 12 MB for musicgen-small and a 20-token prompt, 70
/// MB for musicgen-large and 30 tokens.
const KEEP: usize = 2;

/// A prompt's condition is that of its text and whether guidance (two rows) is on.
type Key = (String, bool);

/// The engine thread's conditions: ready, and the one being built.
#[derive(Default)]
pub(super) struct Conditions {
    /// The model the conditions are for; another model's request clears them.
    model: Option<Arc<MusicGen>>,
    /// Most recent last.
    ready: VecDeque<(Key, TextCondition)>,
    /// The latest request not ready yet (an earlier one still under way is dropped).
    building: Option<(Key, ConditionBuild)>,
}

impl Conditions {
    /// Start building `prompt`'s condition on `model`, unless it is ready or under way. A
    /// prompt that cannot be tokenised is left for [`Conditions::take`] to report.
    pub fn ask(&mut self, model: &Arc<MusicGen>, prompt: &str, guidance: bool) {
        self.use_model(model);
        let key = (prompt.to_owned(), guidance);
        if self.building.as_ref().is_some_and(|(k, _)| *k == key)
            || self.ready.iter().any(|(k, _)| *k == key)
        {
            return;
        }
        self.building = model
            .begin_condition(prompt, guidance)
            .ok()
            .map(|build| (key, build));
    }

    /// Whether a condition is under way.
    pub fn building(&self) -> bool {
        self.building.is_some()
    }

    /// Run the next piece of the condition under way, if any; whether one ran.
    pub fn advance(&mut self) -> bool {
        let (Some(model), Some((_, build))) = (&self.model, &mut self.building) else {
            return false;
        };
        if let Some(condition) = model.advance_condition(build) {
            let (key, _) = self.building.take().expect("under way");
            self.keep(key, condition);
        }
        true
    }

    /// Whether taking `prompt`'s condition now would not wait for pieces still to build.
    pub fn is_ready(&self, prompt: &str, guidance: bool) -> bool {
        !self
            .building
            .as_ref()
            .is_some_and(|((p, g), _)| p == prompt && *g == guidance)
    }

    /// `prompt`'s condition on `model`: the one built ahead (its remaining pieces run now), or
    /// computed now.
    pub fn take(
        &mut self,
        model: &Arc<MusicGen>,
        prompt: &str,
        guidance: bool,
    ) -> Result<TextCondition, LoadError> {
        self.use_model(model);
        let key = (prompt.to_owned(), guidance);
        if self.building.as_ref().is_some_and(|(k, _)| *k == key) {
            while self.building.is_some() {
                self.advance();
            }
        }
        if let Some((_, condition)) = self.ready.iter().find(|(k, _)| *k == key) {
            return Ok(condition.clone());
        }
        let condition = model.condition(prompt, guidance)?;
        self.keep(key, condition.clone());
        Ok(condition)
    }

    /// Forget every condition (a model was loaded).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn use_model(&mut self, model: &Arc<MusicGen>) {
        if !self.model.as_ref().is_some_and(|m| Arc::ptr_eq(m, model)) {
            *self = Self {
                model: Some(model.clone()),
                ..Self::default()
            };
        }
    }

    fn keep(&mut self, key: Key, condition: TextCondition) {
        self.ready.retain(|(k, _)| *k != key);
        if self.ready.len() == KEEP {
            self.ready.pop_front();
        }
        self.ready.push_back((key, condition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matvec::WeightFormat;

    const PROMPT: &str = "80s pop track with bassy drums";

    fn values<const D: usize>(t: &burn::tensor::Tensor<D>) -> Vec<f32> {
        t.to_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn assert_same(a: &TextCondition, b: &TextCondition, what: &str) {
        assert_eq!(a.input_ids, b.input_ids, "{what}: tokens");
        assert_eq!(
            values(&a.encoder_states),
            values(&b.encoder_states),
            "{what}: states"
        );
        assert_eq!(values(&a.mask), values(&b.mask), "{what}: mask");
        assert_eq!(a.cross.kv.len(), b.cross.kv.len());
        for (i, ((ka, va), (kb, vb))) in a.cross.kv.iter().zip(&b.cross.kv).enumerate() {
            assert_eq!(values(ka), values(kb), "{what}: keys of block {i}");
            assert_eq!(values(va), values(vb), "{what}: values of block {i}");
        }
    }

    /// A condition built piece by piece between other work (a T5 block, the projection, one
    /// decoder block's keys and values at a time), with and without guidance, in f32 and q4,
    /// is the one `MusicGen::condition` computes at once, bit for bit; it takes one piece per
    /// T5 block and per decoder block; a newer request drops the one under way; each condition
    /// is kept for the next time, and another model starts over.
    #[test]
    fn a_condition_built_in_pieces_is_the_one_computed_at_once() {
        let mut conditions = Conditions::default();
        for (name, weight_format) in [
            ("musicgen-tiny", WeightFormat::F32),
            ("musicgen-tiny-b", WeightFormat::Q4),
        ] {
            let model = Arc::new(crate::model::fixture_model(name, weight_format));
            let pieces = model.config.text_encoder.num_layers + model.decoder.num_blocks();
            conditions.ask(&model, "", true);
            assert!(
                conditions.ready.is_empty(),
                "{name}: another model's are forgotten"
            );
            assert!(conditions.advance());
            for guidance in [true, false] {
                let what = format!("{name} {weight_format} guidance {guidance}");
                conditions.ask(&model, PROMPT, guidance);
                assert!(!conditions.is_ready(PROMPT, guidance), "{what}");
                let mut ran = 0;
                while conditions.advance() {
                    ran += 1;
                }
                assert_eq!(ran, pieces, "{what}: pieces");
                assert!(conditions.is_ready(PROMPT, guidance));
                let ahead = conditions.take(&model, PROMPT, guidance).unwrap();
                let at_once = model.condition(PROMPT, guidance).unwrap();
                assert_same(&ahead, &at_once, &what);
            }
            assert!(!conditions.building());
            let kept: Vec<_> = conditions.ready.iter().map(|(k, _)| k.clone()).collect();
            let expected = [(PROMPT.to_owned(), true), (PROMPT.to_owned(), false)];
            assert_eq!(kept, expected, "{name}: both kept, the dropped one not");
            // Taken while under way: its remaining pieces run then.
            conditions.ask(&model, "", false);
            assert!(conditions.advance());
            let taken = conditions.take(&model, "", false).unwrap();
            assert_same(&taken, &model.condition("", false).unwrap(), name);
            assert!(!conditions.building());
        }
    }
}
