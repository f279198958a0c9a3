//! The audio thread. It may: read parameters, push one preallocated `ControlFrame` per decoder
//! step, pop PCM from the engine's ring, read and write atomics, write the output. It may not:
//! allocate, lock, do I/O or wait — except in an offline bounce (`offline`), where it waits for
//! the engine with a bound, so the bounce is exact and a stalled engine cannot hang the host.
//!
//! Timeline: the origin is the sample where playback starts; step s starts at sample
//! origin + ceil(s · fs / 50), and the parameter values at that sample drive it. The position is
//! our own counter, since nice-plug splits buffers at parameter events without telling us where.

use std::sync::Arc;
use std::sync::atomic::Ordering::Acquire;
use std::time::Duration;

use engine::stream::{AudioEndpoint, ControlFrame};
use nice_plug::prelude::*;

use crate::engine_link::{LinkShared, request_seek};
use crate::params::MusicrfmParams;

/// The longest an offline bounce waits for one buffer before it gives up (and stays silent).
const OFFLINE_WAIT: Duration = Duration::from_secs(60);

pub struct AudioState {
    pub endpoint: AudioEndpoint,
    pub link: Arc<LinkShared>,
    pub sample_rate: u64,
    /// The process mode at activation: only an offline bounce waits.
    pub offline: bool,
    /// Samples since the timeline origin.
    pub position: u64,
    /// The next step whose control has not been pushed.
    pub next_step: u64,
    pub playing: bool,
    /// Audio was played since the engine's stream started: a new start needs a seek.
    pub played: bool,
    /// After a seek request: the endpoint's epoch before it; the timeline starts once it moves.
    pub awaiting_epoch: Option<u64>,
    /// An offline wait timed out: no more waiting until the next activation.
    pub gave_up: bool,
    /// What `activate()` (or the last change) reported.
    pub reported_latency: u32,
}

impl AudioState {
    pub fn process(
        &mut self,
        params: &MusicrfmParams,
        buffer: &mut Buffer,
        context: &mut impl ProcessContext<crate::Musicrfm>,
    ) -> ProcessStatus {
        let transport = context.transport();
        // A host that sends no transport at all (tempo and position unknown) runs freely.
        let free_running = transport.tempo.is_none() && transport.pos_seconds.is_none();
        let channels = buffer.as_slice();
        let Some((first, rest)) = channels.split_first_mut() else {
            return ProcessStatus::Normal;
        };
        if !(transport.playing || free_running) {
            self.playing = false;
            first.fill(0.0);
            rest.iter_mut().for_each(|c| c.fill(0.0));
            return ProcessStatus::Normal;
        }
        if !self.playing {
            self.playing = true;
            (self.position, self.next_step) = (0, 0);
            if self.played {
                self.awaiting_epoch = Some(self.endpoint.epoch());
                request_seek(&self.link);
            }
        }
        let n = first.len();
        if let Some(epoch) = self.awaiting_epoch {
            self.endpoint.pop(first); // follows the engine's flush; stale audio is dropped
            if self.endpoint.epoch() == epoch {
                first.fill(0.0);
                rest.iter_mut().for_each(|c| c.fill(0.0));
                return ProcessStatus::KeepAlive;
            }
            self.awaiting_epoch = None;
        }

        let fs = self.sample_rate;
        let end = self.position + n as u64;
        while (self.next_step * fs).div_ceil(50) < end {
            let mut frame = ControlFrame::silent(self.next_step);
            frame.master = params.master.value();
            for (value, slot) in frame.slots.iter_mut().zip(&params.slots.0) {
                let schedule = slot.shape.value().schedule(slot.length.value());
                *value = schedule.coefficient(slot.strength.value(), self.next_step as usize, 0.0);
            }
            if !self.endpoint.push_control(frame) {
                break; // the queue is full: push the rest in a later buffer
            }
            self.next_step += 1;
        }

        let faulted = self.link.faulted.load(Acquire);
        if self.offline && !self.gave_up && !faulted {
            let status = self.endpoint.status();
            if (status.running || self.link.expect_audio.load(Acquire))
                && !self.endpoint.wait_for(n, OFFLINE_WAIT)
            {
                self.gave_up = true;
            }
        }
        self.endpoint.pop(first);
        if faulted {
            first.fill(0.0);
        }
        rest.iter_mut().for_each(|c| c.copy_from_slice(first));
        self.position = end;
        self.played = true;

        let status = self.endpoint.status();
        if status.running && status.latency_samples as u32 != self.reported_latency {
            self.reported_latency = status.latency_samples as u32;
            context.set_latency_samples(self.reported_latency);
        }
        ProcessStatus::KeepAlive
    }
}
