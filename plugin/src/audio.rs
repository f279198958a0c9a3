//! The audio thread. It may: read parameters and MIDI, push one preallocated `ControlFrame` per
//! decoder step, pop PCM from the engine's ring, read and write atomics, write the output. It may
//! not: allocate, lock, do I/O or wait — except in an offline bounce, where it waits for the
//! engine with a bound, so the bounce is exact and a stalled engine cannot hang the host.
//!
//! Timeline (arithmetic in [`crate::timeline`]): the origin is the song position where playback
//! first started since activation; step s starts at origin + ceil(s · fs / 50) and the parameter
//! values at that sample drive it. A start or jump elsewhere seeks the engine to the step for
//! that position; the ring's first sample then plays at that step's start (silence before it,
//! late audio skipped), so nothing ever shifts. The position is our own counter, since nice-plug
//! splits buffers at parameter events without telling us where.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::time::Duration;

use engine::stream::{AudioEndpoint, ControlFrame, NOTES, Naps, SLOTS};
use nice_plug::prelude::*;

use crate::engine_link::{LinkShared, Transport, request_seek};
use crate::params::{MusicrfmParams, Shape};
use crate::timeline::{Notes, Origin, Pacing, samples_at, step_start};

/// The longest an offline bounce waits for the engine in one call before it gives up (and
/// stays silent until the next activation).
const OFFLINE_WAIT: Duration = Duration::from_secs(60);

pub struct AudioState {
    pub endpoint: AudioEndpoint,
    pub link: Arc<LinkShared>,
    pub sample_rate: u64,
    /// The process mode at activation.
    pub offline: bool,
    pub origin: Origin,
    /// Samples from the origin at the start of the next piece.
    pub position: u64,
    /// Where the engine's ring starts on the timeline (its first sample plays there).
    pub ring_position: u64,
    /// The next step whose control has not been pushed.
    pub next_step: u64,
    /// The song position (samples) of the next piece's start, as we count it.
    pub song_position: i64,
    /// The song position the host reported last.
    pub reported: Option<i64>,
    pub playing: bool,
    /// The step the engine's current stream starts at, and whether a control was pushed since
    /// (then a new start needs a seek even to the same step).
    pub stream_start: u64,
    pub played: bool,
    /// After a seek request: the endpoint's epoch before it; the timeline starts once it moves.
    pub awaiting_epoch: Option<u64>,
    /// An offline wait timed out: no more waiting until the next activation.
    pub gave_up: bool,
    /// What `activate()` reported.
    pub reported_latency: u32,
    pub notes: Notes,
    pub pacing: Pacing,
}

impl AudioState {
    pub fn new(endpoint: AudioEndpoint, link: Arc<LinkShared>, sample_rate: u64) -> Self {
        Self {
            endpoint,
            link,
            sample_rate,
            offline: false,
            origin: Origin::default(),
            position: 0,
            ring_position: 0,
            next_step: 0,
            song_position: 0,
            reported: None,
            playing: false,
            stream_start: 0,
            played: false,
            awaiting_epoch: None,
            gave_up: false,
            reported_latency: 0,
            notes: Notes::default(),
            pacing: Pacing::default(),
        }
    }

    /// A new activation: a new origin, waiting allowed again.
    pub fn activated(&mut self, offline: bool, latency: u32) {
        self.offline = offline;
        self.gave_up = false;
        self.reported_latency = latency;
        self.origin.reset();
        self.link.transport.store(Transport::Idle as u8, Release);
        self.playing = false;
        self.reported = None;
        self.notes.clear();
        self.pacing.reset();
    }

    /// Whether this call may wait for the engine: an offline render, judged by the activation's
    /// mode unless the host's pacing says otherwise.
    fn may_wait(&self) -> bool {
        let offline = self.pacing.offline().unwrap_or(self.offline);
        offline && !self.gave_up && !self.link.faulted.load(Acquire)
    }

    /// Whether the engine restarted its stream since epoch `epoch`, plays it, and its first
    /// samples (the pre-roll) are in the ring. A pre-generation the engine link started just
    /// before our seek also restarts the stream, but outputs nothing, so the epoch alone does
    /// not say the seek is through; and popping before the pre-roll arrives would count an
    /// underrun where the output is silent anyway.
    fn seek_through(&self, epoch: u64) -> bool {
        self.endpoint.epoch() != epoch && self.endpoint.running() && self.endpoint.available() > 0
    }

    /// Playback starts (or jumps) at song sample `at`: seek the engine to that step.
    fn start(&mut self, at: i64) {
        let start = self.origin.start_at(at, self.sample_rate);
        self.song_position = at;
        self.position = start.position;
        self.next_step = start.step;
        self.ring_position = step_start(start.step, self.sample_rate);
        if self.played || start.step != self.stream_start {
            self.awaiting_epoch = Some(self.endpoint.epoch());
            request_seek(&self.link, start.step);
            self.stream_start = start.step;
            self.played = false;
        }
    }

    pub fn process(
        &mut self,
        params: &MusicrfmParams,
        buffer: &mut Buffer,
        context: &mut impl ProcessContext<crate::Musicrfm>,
    ) -> ProcessStatus {
        let n = buffer.samples();
        self.pacing.enter(n, self.sample_rate);
        let status = self.run(params, buffer, context);
        self.pacing.leave();
        status
    }

    fn run(
        &mut self,
        params: &MusicrfmParams,
        buffer: &mut Buffer,
        context: &mut impl ProcessContext<crate::Musicrfm>,
    ) -> ProcessStatus {
        // The standalone app plays by its own transport (see `crate::standalone`).
        let own;
        let transport = if context.plugin_api() == PluginApi::Standalone {
            own = params
                .transport
                .apply(context.transport(), buffer.samples());
            &own
        } else {
            context.transport()
        };
        // A host that sends no transport at all runs freely from where it is.
        let free_running = transport.tempo.is_none() && transport.pos_seconds.is_none();
        let playing = transport.playing || free_running;
        let reported = transport
            .pos_seconds
            .map(|s| samples_at(s, self.sample_rate));
        let channels = buffer.as_slice();
        let Some((first, rest)) = channels.split_first_mut() else {
            return ProcessStatus::Normal;
        };
        let n = first.len();
        if !playing {
            // Where playing would start: the engine link pre-generates from there.
            let parked = match reported {
                Some(at) => self.origin.peek(at, self.sample_rate),
                None => self.stream_start,
            };
            self.link.parked_step.store(parked, Release);
            for from in [Transport::Playing, Transport::Idle] {
                let _ = self.link.transport.compare_exchange(
                    from as u8,
                    Transport::Stopped as u8,
                    AcqRel,
                    Acquire,
                );
            }
            self.playing = false;
            self.notes.clear();
            while context.next_event().is_some() {}
            first.fill(0.0);
            rest.iter_mut().for_each(|c| c.fill(0.0));
            return ProcessStatus::Normal;
        }
        // A jump: the host's position moved (it repeats a buffer's start while nice-plug splits
        // the buffer) and is not where we are.
        let jumped = reported
            .is_some_and(|at| self.reported != Some(at) && at.abs_diff(self.song_position) > 1);
        if self.link.transport.swap(Transport::Playing as u8, AcqRel)
            == Transport::Pregenerating as u8
        {
            // The engine left the stream for a pre-generation: seek even to the same step.
            self.played = true;
        }
        if !self.playing || jumped {
            self.start(reported.unwrap_or(self.song_position));
        }
        self.playing = true;
        self.reported = reported;

        if let Some(epoch) = self.awaiting_epoch {
            if self.may_wait() && self.link.expect_audio.load(Acquire) {
                let mut naps = Naps::new(OFFLINE_WAIT);
                while !self.seek_through(epoch) {
                    self.endpoint.pop(&mut []); // follows the engine's flush
                    if !naps.sleep() {
                        self.gave_up = true;
                        break;
                    }
                }
            } else {
                self.endpoint.pop(&mut []);
            }
            if !self.seek_through(epoch) {
                // Realtime: the seek is not through yet; time goes on in silence.
                while context.next_event().is_some() {}
                self.position += n as u64;
                self.song_position += n as i64;
                first.fill(0.0);
                rest.iter_mut().for_each(|c| c.fill(0.0));
                return ProcessStatus::KeepAlive;
            }
            self.awaiting_epoch = None;
        }

        self.push_controls(params, context, n);

        // Silence until the ring's first sample; what should have played already is skipped.
        let end = self.position + n as u64;
        let lead = (self.ring_position.saturating_sub(self.position) as usize).min(n);
        if self.position > self.ring_position {
            self.endpoint
                .skip((self.position - self.ring_position) as usize);
        }
        let faulted = self.link.faulted.load(Acquire);
        let wanted = n - lead;
        if wanted > 0
            && self.may_wait()
            && self.link.expect_audio.load(Acquire)
            && !self.endpoint.wait_for(wanted, OFFLINE_WAIT)
        {
            self.gave_up = true;
        }
        first[..lead].fill(0.0);
        self.endpoint.pop(&mut first[lead..]);
        if faulted {
            first.fill(0.0);
        }
        rest.iter_mut().for_each(|c| c.copy_from_slice(first));
        self.position = end;
        self.song_position += n as i64;
        self.ring_position = self.ring_position.max(end);
        // A model that finished loading after `activate()` gave up waiting for it: report its
        // latency now (the host restarts processing to apply it).
        let status = self.endpoint.status();
        if status.running && status.latency_samples as u32 != self.reported_latency {
            self.reported_latency = status.latency_samples as u32;
            context.set_latency_samples(self.reported_latency);
        }
        ProcessStatus::KeepAlive
    }

    /// The controls of every step starting in this piece, each with the parameter values and
    /// the notes held at its first sample.
    fn push_controls(
        &mut self,
        params: &MusicrfmParams,
        context: &mut impl ProcessContext<crate::Musicrfm>,
        n: usize,
    ) {
        let end = self.position + n as u64;
        let midi_slot = self.link.midi_slot.load(Acquire);
        let mut event = context.next_event();
        while step_start(self.next_step, self.sample_rate) < end {
            let offset = step_start(self.next_step, self.sample_rate).saturating_sub(self.position);
            while let Some(e) = event.filter(|e| u64::from(e.timing()) <= offset) {
                self.note(e);
                event = context.next_event();
            }
            let step = self.next_step;
            let levels = self.notes.step();
            let frame = StepParams::read(params).control(step, midi_slot, levels);
            if !self.endpoint.push_control(frame) {
                break; // the queue is full: push the rest in a later piece
            }
            self.played = true;
            self.next_step += 1;
        }
        while let Some(e) = event {
            self.note(e);
            event = context.next_event();
        }
    }

    fn note(&mut self, event: NoteEvent<()>) {
        match event {
            NoteEvent::NoteOn { key, velocity, .. } => {
                if let Some(key) = key.number() {
                    self.notes.note_on(key, velocity);
                }
            }
            // A note-off for any key: every held note is released.
            NoteEvent::NoteOff { key, .. } => match key.number() {
                Some(key) => self.notes.note_off(key),
                None => self.notes.release_all(),
            },
            _ => {}
        }
    }
}

/// The parameter values a step's control is made of: what the audio thread reads at a step's
/// first sample, and what the engine link snapshots to pre-generate while the transport is
/// stopped. One function makes the control from them, so the two agree bit for bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepParams {
    pub master: f32,
    /// Each slot's strength, shape and length in seconds.
    pub slots: [(f32, Shape, f32); SLOTS],
}

impl StepParams {
    pub fn read(params: &MusicrfmParams) -> Self {
        Self {
            master: params.master.value(),
            slots: std::array::from_fn(|k| {
                let slot = &params.slots.0[k];
                (
                    slot.strength.value(),
                    slot.shape.value(),
                    slot.length.value(),
                )
            }),
        }
    }

    /// Step `step`'s control: slot k at strength_k · shape_k(step) (0 for the slot in MIDI
    /// notes mode, `midi_slot`; `SLOTS` for none), the held notes' levels times that slot's
    /// strength.
    pub fn control(&self, step: u64, midi_slot: usize, levels: [f32; NOTES]) -> ControlFrame {
        let mut frame = ControlFrame::silent(step);
        frame.master = self.master;
        for (k, (value, &(strength, shape, length))) in
            frame.slots.iter_mut().zip(&self.slots).enumerate()
        {
            *value = if k == midi_slot {
                0.0
            } else {
                shape
                    .schedule(length)
                    .coefficient(strength, step as usize, 0.0)
            };
        }
        if let Some(&(strength, _, _)) = self.slots.get(midi_slot) {
            for (note, level) in frame.notes.iter_mut().zip(levels) {
                *note = level * strength;
            }
        }
        frame
    }
}
