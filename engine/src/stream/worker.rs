//! The engine thread: commands in, one [`Session`] at a time, steps paced by the clock,
//! audio into the ring. Everything here runs on that thread; it may allocate and block.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::decoder::BlockHook;
use crate::model::{MusicGen, TextCondition};

use super::cache::{Recording, TimelineCache};
use super::conditions::Conditions;
use super::meters::{EVERY_STEPS, MeterProbe, Meters};
use super::session::{Session, SessionOptions, Stepper};
use super::shared::{ErrorCode, Shared};
use super::slots::Steering;
use super::{
    Clock, Command, ControlFrame, EngineConfig, GenerationSettings, ModelSource, SLOTS, StepTime,
    StreamError,
};

/// How long the thread sleeps when it has nothing to do, waiting for a command.
const IDLE: Duration = Duration::from_micros(500);

/// Controls kept for late steps: more than the codebook delay a successor lags by.
const RECENT: usize = 64;

/// A step's audio (50 frames a second): a step that took less leaves the rest of it to a
/// prompt under way.
const STEP_AUDIO: Duration = Duration::from_millis(20);

/// Step times kept for [`super::EngineHandle::step_times`].
const STEP_TIMES: usize = 1 << 16;

/// What a command asks of the running session.
enum Flow {
    Continue,
    /// Build a new session (new model, settings, seek).
    Restart,
    /// The handle was dropped.
    Stop,
}

pub(super) struct Worker {
    config: EngineConfig,
    commands: Receiver<Command>,
    controls: rtrb::Consumer<ControlFrame>,
    pcm: rtrb::Producer<f32>,
    shared: Arc<Shared>,
    model: Option<Arc<MusicGen>>,
    /// Prompts by the step they start at.
    prompts: BTreeMap<u64, String>,
    /// Prompts' conditions, computed ahead of the steps that take them.
    conditions: Conditions,
    /// A prompt asked for while playing, for the steps from the one it was asked at on: the
    /// stream takes it at the first step after its condition is ready, so that no step waits
    /// for T5 (and records it there, in `prompts`).
    asap: Option<(u64, String)>,
    steering: Steering,
    settings: GenerationSettings,
    /// Where the next session starts.
    start_step: u64,
    /// Controls popped but not yet due, and the values of the last one used.
    pending: VecDeque<ControlFrame>,
    held: ControlFrame,
    /// The controls of the last [`RECENT`] steps run, for the steps a window's successor runs
    /// late.
    recent: VecDeque<ControlFrame>,
    meters: Meters,
    /// Recordings of earlier timeline streams, and the one being made.
    cache: TimelineCache,
    recording: Option<Recording>,
    /// A pre-generation asked for, run by the next stream.
    pregen: Option<Pregen>,
    /// Bumped by every command that changes what a stream would produce (model, prompts,
    /// slots, sampling): recordings of other versions are not replayed.
    version: u64,
    /// Audio made but not yet in the ring (full, or the audio thread has not drained a flush).
    out: VecDeque<f32>,
    scratch: Vec<f32>,
    /// Set when a session failed: wait for a command before trying again.
    failed: bool,
    /// Fault injection for tests: the next step panics.
    panic_next_step: bool,
    /// The duration of every step run.
    step_times: Vec<StepTime>,
}

impl Worker {
    pub fn new(
        config: EngineConfig,
        commands: Receiver<Command>,
        controls: rtrb::Consumer<ControlFrame>,
        pcm: rtrb::Producer<f32>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            config,
            commands,
            controls,
            pcm,
            shared,
            model: None,
            prompts: BTreeMap::new(),
            conditions: Conditions::default(),
            asap: None,
            steering: Steering::default(),
            settings: GenerationSettings::default(),
            start_step: 0,
            pending: VecDeque::new(),
            held: ControlFrame::silent(0),
            recent: VecDeque::with_capacity(RECENT + 1),
            meters: Meters::default(),
            cache: TimelineCache::default(),
            recording: None,
            version: 0,
            pregen: None,
            out: VecDeque::new(),
            scratch: Vec::new(),
            failed: false,
            panic_next_step: false,
            step_times: Vec::new(),
        }
    }

    pub fn run(mut self) {
        loop {
            let Some(model) = self.ready_model() else {
                match self.commands.recv() {
                    Ok(command) => {
                        if let Flow::Stop = self.handle(command, None) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
                continue;
            };
            // Streams with this model. The last timeline session stays parked at the end of
            // its recording, so a replay that plays past the recording goes on with it.
            let mut parked: Option<Session<'_>> = None;
            loop {
                let flow = self.stream(&model, &mut parked);
                if let Some(recording) = self.recording.take() {
                    self.cache.put(recording);
                }
                if let Flow::Stop = flow {
                    return;
                }
                match self.ready_model() {
                    Some(next) if Arc::ptr_eq(&next, &model) => {}
                    _ => break,
                }
            }
        }
    }

    /// The model, when a stream can start (a prompt is set and no failure waits for a command).
    fn ready_model(&self) -> Option<Arc<MusicGen>> {
        self.model
            .clone()
            .filter(|_| !self.failed && self.prompt_at(self.start_step).is_some())
    }

    /// Run one session until a command replaces it or it fails. A timeline stream that starts
    /// where a recorded one started, in the same engine state, replays the recording while the
    /// controls are the recorded ones.
    fn stream<'m>(&mut self, model: &'m MusicGen, parked: &mut Option<Session<'m>>) -> Flow {
        self.shared.running.store(false, Release);
        let epoch = self.shared.epoch.fetch_add(1, AcqRel) + 1;
        self.out.clear();
        self.pending.clear();
        self.recent.clear();
        self.meters.clear();
        self.held = ControlFrame::silent(self.start_step);
        self.shared.step.store(self.start_step, Release);
        self.shared.slides.store(0, Release);
        self.shared.pregenerated.store(0, Release);
        if let Err(e) = self.steering.rebuild(model, self.settings.seed) {
            return self.fail(&e);
        }
        if let Some(pregen) = self.pregen.take() {
            *parked = None;
            return self.pregenerate(model, pregen, parked);
        }
        let recorded = match self.config.clock {
            Clock::Timeline => self.cache.take(self.version, self.start_step),
            Clock::Live => None,
        };
        let (mut session, latency) = match recorded {
            Some(recording) => match self.replay(model, recording, epoch, parked) {
                Ok(live) => live,
                Err(flow) => return flow,
            },
            None => {
                *parked = None; // one session at a time: free the parked one first
                let session = match self.new_session(model) {
                    Ok(session) => session,
                    Err(e) => return self.fail(&e),
                };
                let latency = session.latency_samples();
                self.start_audio(latency);
                if self.config.clock == Clock::Timeline {
                    self.recording = self.new_recording(latency);
                }
                (session, latency)
            }
        };
        let flow = self.live(&mut session, latency, epoch);
        self.park(session, parked);
        flow
    }

    /// A recording of the stream starting now, if the timeline cache is on.
    fn new_recording(&self, latency: usize) -> Option<Recording> {
        let seconds = self.config.timeline_cache_seconds as usize;
        let limit = seconds * self.config.sample_rate as usize;
        (limit > 0).then(|| Recording::new(self.version, self.start_step, latency, limit))
    }

    /// Keep `session` for a replay of its recording that plays on past it (only when the
    /// recording holds every step it ran).
    fn park<'m>(&self, session: Session<'m>, parked: &mut Option<Session<'m>>) {
        *parked = self
            .recording
            .as_ref()
            .filter(|r| r.start + r.controls.len() as u64 == session.next_step())
            .map(|_| session);
    }

    /// Run steps as their controls come, until a command ends the stream. A prompt still
    /// waiting for its condition then applies from the step it was asked at.
    fn live(&mut self, session: &mut Session<'_>, latency: usize, epoch: u64) -> Flow {
        let flow = self.live_steps(session, latency, epoch);
        if let Some((step, prompt)) = self.asap.take() {
            self.prompts.insert(step, prompt);
        }
        self.shared.prompt_pending.store(false, Release);
        flow
    }

    fn live_steps(&mut self, session: &mut Session<'_>, latency: usize, epoch: u64) -> Flow {
        loop {
            let mut worked = false;
            loop {
                match self.commands.try_recv() {
                    Ok(command) => match self.live_command(command, session) {
                        Flow::Continue => worked = true,
                        flow => return flow,
                    },
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Flow::Stop,
                }
            }
            if self.shared.acknowledged.load(Acquire) == epoch {
                worked |= self.flush_out();
            }
            self.take_ready_prompt(session.next_step());
            let control = self.due_control(session.next_step(), latency);
            match self.run_step(session, control.as_ref()) {
                Ok(ran) => worked |= ran,
                Err(e) => return self.fail(&e),
            }
            if !worked && self.conditions.building() {
                // Nothing else to do: the prompt under way takes a piece of the time.
                if let Err(e) = self.condition_piece(session) {
                    return self.fail(&e);
                }
                continue;
            }
            if !worked {
                match self.commands.recv_timeout(IDLE) {
                    Ok(command) => {
                        if let flow @ (Flow::Restart | Flow::Stop) =
                            self.live_command(command, session)
                        {
                            return flow;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Flow::Stop,
                }
            }
        }
    }

    /// A command while `session` plays: a prompt for the steps from one already due waits
    /// for its condition, computed beside the steps ([`Worker::asap`]); anything else as
    /// [`Worker::handle`] does it.
    fn live_command(&mut self, command: Command, session: &mut Session<'_>) -> Flow {
        match command {
            Command::SetPrompt { prompt, at_step }
                if session.next_step() > self.start_step && at_step <= session.next_step() =>
            {
                self.version += 1;
                if let Some(model) = self.model.clone() {
                    self.conditions.ask(&model, &prompt, self.guided());
                }
                self.asap = Some((session.next_step(), prompt));
                self.shared.prompt_pending.store(true, Release);
                Flow::Continue
            }
            command => self.handle(command, Some(session)),
        }
    }

    /// The prompt asked for while playing goes into the timeline at `step` once its condition
    /// is ready.
    fn take_ready_prompt(&mut self, step: u64) {
        let guided = self.guided();
        if let Some((_, prompt)) = &self.asap
            && self.conditions.is_ready(prompt, guided)
            && let Some((_, prompt)) = self.asap.take()
        {
            self.prompts.insert(step, prompt);
            self.shared.prompt_pending.store(false, Release);
        }
    }

    /// One piece of the prompt condition under way, on the pool as a step runs (a panic
    /// inside reported as a step's).
    fn condition_piece(&mut self, session: &Session<'_>) -> Result<(), StreamError> {
        let on_host = session.model().decoder.steps_on_host();
        let conditions = &mut self.conditions;
        crate::pool::step(on_host, || {
            catch_unwind(AssertUnwindSafe(|| conditions.advance()))
        })
        .map(drop)
        .map_err(|panic| StreamError::Panic {
            step: session.next_step(),
            message: panic_message(panic.as_ref()),
        })
    }

    /// Whether the steps run classifier-free guidance (a condition of two rows).
    fn guided(&self) -> bool {
        self.settings.guidance > 1.0
    }

    /// Generate ahead from `self.start_step` with `pregen`'s controls while the transport is
    /// stopped: nothing goes to the ring, everything into a recording, so that playing from
    /// there with that automation replays it and goes on with the parked session. Any command
    /// ends it.
    fn pregenerate<'m>(
        &mut self,
        model: &'m MusicGen,
        pregen: Pregen,
        parked: &mut Option<Session<'m>>,
    ) -> Flow {
        let mut session = match self.new_session(model) {
            Ok(session) => session,
            Err(e) => return self.fail(&e),
        };
        self.recording = self.new_recording(session.latency_samples());
        let end = self.start_step + pregen.steps;
        let flow = loop {
            match self.commands.try_recv() {
                Ok(command) => match self.handle(command, Some(&mut session)) {
                    Flow::Continue => continue,
                    flow => break flow,
                },
                Err(TryRecvError::Disconnected) => break Flow::Stop,
                Err(TryRecvError::Empty) => {}
            }
            let full = self.recording.as_ref().is_none_or(Recording::is_full);
            if session.next_step() >= end || full {
                match self.commands.recv() {
                    Ok(command) => match self.handle(command, Some(&mut session)) {
                        Flow::Continue => continue,
                        flow => break flow,
                    },
                    Err(_) => break Flow::Stop,
                }
            }
            let control = (pregen.controls)(session.next_step());
            if let Err(e) = self.run_step(&mut session, Some(&control)) {
                return self.fail(&e);
            }
            self.out.clear();
            let generated = session.next_step().saturating_sub(self.start_step);
            self.shared.pregenerated.store(generated, Release);
        };
        self.park(session, parked);
        flow
    }

    fn new_session<'m>(&mut self, model: &'m MusicGen) -> Result<Session<'m>, StreamError> {
        let (from, prompt) = self
            .prompt_at(self.start_step)
            .map_or((self.start_step, String::new()), |(s, p)| (s, p.to_owned()));
        let options = SessionOptions {
            start_step: self.start_step,
            settings: self.settings,
            window: self.config.window,
            reprompt_frames: self.config.reprompt_frames,
            decode_chunk_frames: self
                .config
                .decode_chunk_frames
                .unwrap_or_else(|| super::default_decode_chunk(model)),
            sample_rate: self.config.sample_rate,
            cushion_steps: self.config.cushion_steps,
        };
        let guided = self.guided();
        let condition = take_condition(&mut self.conditions, &self.model, model, &prompt, guided)?;
        self.shared.prompt_step.store(from, Release);
        Ok(Session::with_condition(model, &prompt, condition, options))
    }

    /// The stream's pre-roll (silence as long as the latency) and the running flag.
    fn start_audio(&mut self, latency: usize) {
        self.shared.latency_samples.store(latency as u64, Release);
        self.out.extend(std::iter::repeat_n(0.0, latency));
        self.shared.running.store(true, Release);
    }

    /// Replay `recording` while each step's control is the recorded one, without decoder
    /// steps. At the first step whose control differs (or past the recording, or after a
    /// command changed the engine's state) a session is built and the recorded steps are run
    /// again to reach that step (their audio, already played, is dropped), and the stream
    /// goes on live from there: `Ok((session, latency))`. `Err(flow)` when a command ends the
    /// stream first (the recording stays in the cache).
    fn replay<'m>(
        &mut self,
        model: &'m MusicGen,
        recording: Recording,
        epoch: u64,
        parked: &mut Option<Session<'m>>,
    ) -> Result<(Session<'m>, usize), Flow> {
        let end = recording.start + recording.controls.len() as u64;
        if parked
            .as_ref()
            .is_some_and(|s| s.start_step() != recording.start || s.next_step() != end)
        {
            *parked = None;
        }
        let (start, latency) = (recording.start, recording.latency);
        self.start_audio(latency);
        let mut played = 0usize;
        let mut i = 0usize;
        let version = self.version;
        loop {
            let mut worked = false;
            loop {
                let command = match self.commands.try_recv() {
                    Ok(command) => command,
                    Err(TryRecvError::Empty) => break,
                    // The handle was dropped: the engine stops.
                    Err(TryRecvError::Disconnected) => return Err(Flow::Stop),
                };
                worked = true;
                let flow = match command {
                    Command::SetPrompt { prompt, at_step } if at_step > start => {
                        self.version += 1;
                        if let Some(model) = self.model.clone() {
                            self.conditions.ask(&model, &prompt, self.guided());
                        }
                        self.prompts.insert(at_step.max(start + i as u64), prompt);
                        Flow::Continue
                    }
                    Command::SetGeneration(settings) => {
                        self.settings = settings;
                        self.version += 1;
                        self.start_step = start + i as u64;
                        Flow::Restart
                    }
                    command => self.handle(command, None),
                };
                match flow {
                    Flow::Continue => {}
                    flow => {
                        if self.version == version {
                            self.cache.put(recording);
                        }
                        return Err(flow);
                    }
                }
            }
            if self.shared.acknowledged.load(Acquire) == epoch {
                worked |= self.flush_out();
            }
            if let Some(control) = self.due_control(start + i as u64, latency) {
                let same = self.version == version && recording.controls.get(i) == Some(&control);
                if !same {
                    if self.version == version
                        && i == recording.controls.len()
                        && let Some(session) = parked.take()
                    {
                        return self.go_on(session, recording, control);
                    }
                    *parked = None;
                    return self.resume(model, recording, i, played, control);
                }
                let bound = recording.bound(i + 1);
                self.out.extend(&recording.audio[played..bound]);
                played = bound;
                i += 1;
                self.held = control;
                self.shared.step.store(start + i as u64, Release);
                self.shared.cached_steps.fetch_add(1, Relaxed);
                worked = true;
            }
            if !worked {
                std::thread::sleep(IDLE);
            }
        }
    }

    /// A replay reached the end of its recording, whose session is parked there: go on with
    /// it (no step is run again), starting with `control`'s step.
    fn go_on<'m>(
        &mut self,
        mut session: Session<'m>,
        recording: Recording,
        control: ControlFrame,
    ) -> Result<(Session<'m>, usize), Flow> {
        let latency = recording.latency;
        let tail = recording.controls.len().saturating_sub(RECENT);
        self.recent.clear();
        self.recent.extend(&recording.controls[tail..]);
        self.recording = Some(recording);
        if let Err(e) = self.run_step(&mut session, Some(&control)) {
            return Err(self.fail(&e));
        }
        self.held = control;
        Ok((session, latency))
    }

    /// Leave a replay at step `start + steps` (whose control is `control`): run the recorded
    /// steps on a new session, keep the audio past the `played` samples, then run `control`'s
    /// step live. The recording continues with the new session.
    fn resume<'m>(
        &mut self,
        model: &'m MusicGen,
        mut recording: Recording,
        steps: usize,
        played: usize,
        control: ControlFrame,
    ) -> Result<(Session<'m>, usize), Flow> {
        let latency = recording.latency;
        let mut session = match self.new_session(model) {
            Ok(session) => session,
            Err(e) => return Err(self.fail(&e)),
        };
        let queued = self.out.len();
        for recorded in &recording.controls[..steps] {
            if let Err(e) = self.run_step(&mut session, Some(recorded)) {
                return Err(self.fail(&e));
            }
        }
        loop {
            match self.run_step(&mut session, None) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(self.fail(&e)),
            }
        }
        let audio: Vec<f32> = self.out.drain(queued..).collect();
        self.out.extend(&audio[played.min(audio.len())..]);
        recording.continue_after(steps, audio);
        recording.version = self.version;
        self.recording = Some(recording);
        if let Err(e) = self.run_step(&mut session, Some(&control)) {
            return Err(self.fail(&e));
        }
        self.held = control;
        Ok((session, latency))
    }

    /// Timeline step `control.step` (with a prompt change due there), or with `None` one unit
    /// of the session's deferred work; a panic inside caught and reported. Whether anything
    /// ran.
    fn run_step(
        &mut self,
        session: &mut Session<'_>,
        control: Option<&ControlFrame>,
    ) -> Result<bool, StreamError> {
        let step = session.next_step();
        let prompt = control
            .and_then(|_| self.prompts.get(&step))
            .filter(|_| step > self.start_step)
            .cloned();
        let started = Instant::now();
        let guided = self.guided();
        if let Some(control) = control {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(*control);
            if let Some(recording) = &mut self.recording {
                recording.step(control);
            }
        }
        let mut plans = RecentPlans {
            steering: &mut self.steering,
            recent: &self.recent,
            meters: &mut self.meters,
            model: session.model(),
        };
        let prompted = prompt.is_some();
        let (conditions, loaded, guided) = (&mut self.conditions, &self.model, guided);
        let scratch = &mut self.scratch;
        let inject = control.is_some() && std::mem::take(&mut self.panic_next_step);
        let sliding = session.sliding();
        // The step runs on one of rayon's threads, with the others kept awake for a host step
        // (`crate::pool::step`): its ~200 parallel products fork from inside the pool, where a
        // join waits by working, and each is picked up at once.
        let on_host = session.model().decoder.steps_on_host();
        let result = crate::pool::step(on_host, || {
            catch_unwind(AssertUnwindSafe(|| {
                assert!(!inject, "fault injected by the engine's panic test");
                match control {
                    Some(_) => {
                        if let Some(prompt) = &prompt {
                            // Built ahead, or its remaining pieces run now.
                            let model = session.model();
                            let condition =
                                take_condition(conditions, loaded, model, prompt, guided)?;
                            session.set_condition(prompt, condition, &mut plans, scratch)?;
                        }
                        session.step(&mut plans, scratch)?;
                        // A prompt under way takes a piece of every step, and more while
                        // another as long as the longest so far fits in the step's audio time.
                        let mut longest = Duration::ZERO;
                        loop {
                            let piece = Instant::now();
                            if !conditions.advance() {
                                break;
                            }
                            longest = longest.max(piece.elapsed());
                            if started.elapsed() + longest >= STEP_AUDIO {
                                break;
                            }
                        }
                        Ok(true)
                    }
                    None => session.work(&mut plans, scratch),
                }
            }))
        });
        let worked = match result {
            Ok(result) => result?,
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                return Err(StreamError::Panic { step, message });
            }
        };
        if let Some(recording) = &mut self.recording {
            recording.audio(&self.scratch);
        }
        self.out.extend(self.scratch.drain(..));
        if control.is_some() {
            if let Some(rest) = self.config.step_floor.checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
            if self.step_times.len() == STEP_TIMES {
                self.step_times.drain(..STEP_TIMES / 2);
            }
            let took = started.elapsed();
            let nanos = took.as_nanos().min(u64::MAX as u128) as u64;
            let smoothed = match self.shared.step_nanos.load(Relaxed) {
                0 => nanos,
                last => last - last / 8 + nanos / 8,
            };
            self.shared.step_nanos.store(smoothed.max(1), Relaxed);
            self.step_times.push(StepTime {
                took,
                sliding: sliding || session.sliding(),
                prompt: prompted,
            });
            if prompted {
                self.shared.prompt_step.store(step, Release);
            }
            // Meters first: a reader that sees the step sees its publication.
            if session.next_step().is_multiple_of(EVERY_STEPS) {
                self.meters.publish(&self.shared);
            }
            self.shared.slides.store(session.slides() as u64, Release);
            self.shared.steps_done.fetch_add(1, Relaxed);
            self.shared.step.store(session.next_step(), Release);
        }
        Ok(worked)
    }

    /// The control for `step` when the clock says to run it now.
    fn due_control(&mut self, step: u64, latency: usize) -> Option<ControlFrame> {
        while let Ok(control) = self.controls.pop() {
            self.pending.push_back(control);
        }
        let buffered = self.out.len() + (self.pcm.buffer().capacity() - self.pcm.slots());
        match self.config.clock {
            Clock::Timeline => {
                if self.out.len() > self.config.ring_samples {
                    return None; // nobody drains the ring: park
                }
                while self.pending.front().is_some_and(|c| c.step < step) {
                    self.pending.pop_front(); // stale: for a step already run or before a seek
                }
                match self.pending.front() {
                    Some(c) if c.step == step => {
                        self.held = *c;
                        self.pending.pop_front();
                    }
                    // The control of this step never came: hold the previous values.
                    Some(_) => {}
                    None => return None,
                }
                Some(ControlFrame { step, ..self.held })
            }
            Clock::Live => {
                if let Some(&last) = self.pending.back() {
                    self.held = last;
                }
                self.pending.clear();
                (buffered < latency).then_some(ControlFrame { step, ..self.held })
            }
        }
    }

    /// Move made audio into the ring; whether anything moved.
    fn flush_out(&mut self) -> bool {
        let n = self.out.len().min(self.pcm.slots());
        if n == 0 {
            return false;
        }
        if let Ok(chunk) = self.pcm.write_chunk_uninit(n) {
            chunk.fill_from_iter(self.out.drain(..n));
        }
        true
    }

    /// Apply a command; `session` is the running one, if any.
    fn handle(&mut self, command: Command, session: Option<&mut Session<'_>>) -> Flow {
        if matches!(
            command,
            Command::LoadModel(..)
                | Command::SetPrompt { .. }
                | Command::SetSlot(..)
                | Command::SetNotes(_)
                | Command::SetGeneration(_)
        ) {
            self.version += 1;
        }
        let result = match command {
            Command::LoadModel(source, options) => {
                self.load_model(source, options).map(|()| Flow::Restart)
            }
            Command::SetPrompt { prompt, at_step } => Ok(self.set_prompt(prompt, at_step, session)),
            Command::SetSlot(slot, spec) => self.set_slot(slot, spec),
            Command::SetNotes(spec) => self.set_slot(SLOTS, spec),
            Command::SetGeneration(settings) => {
                self.settings = settings;
                if let Some(s) = &session {
                    self.start_step = s.next_step();
                }
                Ok(Flow::Restart)
            }
            Command::Seek(step) => {
                // Controls queued before the seek belong to the old timeline: the audio thread
                // pushes none between asking for a seek and seeing its new epoch.
                while self.controls.pop().is_ok() {}
                self.pending.clear();
                self.start_step = step;
                Ok(Flow::Restart)
            }
            Command::Pregenerate {
                start,
                steps,
                controls,
            } => {
                self.start_step = start;
                self.pregen = Some(Pregen { steps, controls });
                Ok(Flow::Restart)
            }
            Command::Codes(reply) => {
                let _ = reply.send(session.map(|s| s.codes()));
                Ok(Flow::Continue)
            }
            Command::StepTimes(reply) => {
                let _ = reply.send(self.step_times.clone());
                Ok(Flow::Continue)
            }
            Command::PanicInStep => {
                self.panic_next_step = true;
                Ok(Flow::Continue)
            }
        };
        match result {
            Ok(flow) => {
                if let Flow::Restart = flow {
                    self.failed = false;
                }
                flow
            }
            Err(e) => {
                self.report(&e);
                Flow::Continue
            }
        }
    }

    /// A prompt for the steps from `at_step` on. Without a session, or before the session's
    /// first step, one at or before its start (re)starts it, and one after it waits for its
    /// step; otherwise a prompt for a step already run applies from the next one.
    fn set_prompt(
        &mut self,
        prompt: String,
        at_step: u64,
        session: Option<&mut Session<'_>>,
    ) -> Flow {
        match session {
            Some(s) if s.next_step() > self.start_step || at_step > self.start_step => {
                // A prompt for a later step: its condition is computed beside the steps until
                // then.
                if at_step > s.next_step()
                    && let Some(model) = self.model.clone()
                {
                    self.conditions.ask(&model, &prompt, self.guided());
                }
                self.prompts.insert(at_step.max(s.next_step()), prompt);
                Flow::Continue
            }
            // No session yet: a prompt for a later step than the next session's first waits
            // there (it used to be moved to the start).
            None if at_step > self.start_step => {
                if let Some(model) = self.model.clone() {
                    self.conditions.ask(&model, &prompt, self.guided());
                }
                self.prompts.insert(at_step, prompt);
                Flow::Continue
            }
            _ => {
                self.prompts.insert(at_step.min(self.start_step), prompt);
                Flow::Restart
            }
        }
    }

    fn set_slot(
        &mut self,
        slot: usize,
        spec: Option<super::SlotDirection>,
    ) -> Result<Flow, StreamError> {
        let model = self.model.clone();
        self.steering
            .set(model.as_deref(), slot, spec.clone(), self.settings.seed)?;
        // A probe that cannot be used only leaves the slot without a meter.
        let probe = spec
            .zip(model)
            .and_then(|(spec, model)| MeterProbe::beside(&spec.file, &model).ok().flatten());
        self.meters.set(slot, probe, &self.shared);
        Ok(Flow::Continue)
    }

    fn load_model(
        &mut self,
        source: ModelSource,
        options: crate::model::LoadOptions,
    ) -> Result<(), StreamError> {
        let name = match &source {
            ModelSource::Loaded(model) => model.dir.display().to_string(),
            ModelSource::Path(name) => name.clone(),
        };
        if let Ok(mut shown) = self.shared.model_name.lock() {
            *shown = name;
        }
        self.shared.loading.store(true, Release);
        let loaded = match source {
            ModelSource::Loaded(model) => Ok(model),
            ModelSource::Path(name) => {
                super::models::load_shared(&name, options).map_err(|error| StreamError::Model {
                    model: name,
                    error: Box::new(error),
                })
            }
        };
        self.shared.loading.store(false, Release);
        let model = loaded.inspect_err(|_| {
            self.shared.model_width.store(0, Release);
        })?;
        self.shared
            .model_width
            .store(model.decoder.d_model() as u64, Release);
        self.shared
            .model_blocks
            .store(model.decoder.num_blocks() as u64, Release);
        self.steering.rebuild(&model, self.settings.seed)?;
        self.conditions.clear();
        self.model = Some(model);
        Ok(())
    }

    /// The prompt in effect at `step`, and the step it starts at.
    fn prompt_at(&self, step: u64) -> Option<(u64, &str)> {
        self.prompts
            .range(..=step)
            .next_back()
            .map(|(&s, p)| (s, p.as_str()))
    }

    /// Report `error`, stop the audio (silence) and wait for the next command.
    fn fail(&mut self, error: &StreamError) -> Flow {
        self.report(error);
        self.shared.running.store(false, Release);
        self.shared.epoch.fetch_add(1, AcqRel);
        self.out.clear();
        self.recording = None;
        self.failed = true;
        Flow::Continue
    }

    fn report(&self, error: &StreamError) {
        let code = match error {
            StreamError::Model { .. } => ErrorCode::ModelLoad,
            StreamError::Slot { .. } => ErrorCode::Directions,
            StreamError::Prompt { .. } => ErrorCode::Prompt,
            StreamError::Generate { .. } | StreamError::Panic { .. } => ErrorCode::Step,
            StreamError::NoSuchSlot(_)
            | StreamError::Config(_)
            | StreamError::Stopped
            | StreamError::NoAudio { .. } => ErrorCode::Command,
        };
        if let Ok(mut message) = self.shared.error_message.lock() {
            *message = error.to_string();
        }
        self.shared.error_code.store(code as u32, Release);
        self.shared.errors.fetch_add(1, AcqRel);
    }
}

/// `prompt`'s condition on `model`: built ahead (or finished now) if `model` is the `loaded`
/// one, else computed now.
fn take_condition(
    conditions: &mut Conditions,
    loaded: &Option<Arc<MusicGen>>,
    model: &MusicGen,
    prompt: &str,
    guided: bool,
) -> Result<TextCondition, StreamError> {
    let condition = match loaded {
        Some(loaded) if std::ptr::eq(loaded.as_ref(), model) => {
            conditions.take(loaded, prompt, guided)
        }
        _ => model.condition(prompt, guided),
    };
    condition.map_err(|error| super::session::prompt_error(prompt, error))
}

/// A caught panic's message.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// See [`super::EngineHandle::pregenerate`].
pub(super) struct Pregen {
    steps: u64,
    controls: Box<dyn Fn(u64) -> ControlFrame + Send>,
}

/// Steps with the plans of the steps run lately (the control of that step, or the nearest
/// earlier one), the meters watching fresh steps.
struct RecentPlans<'a> {
    steering: &'a mut Steering,
    recent: &'a VecDeque<ControlFrame>,
    meters: &'a mut Meters,
    model: &'a MusicGen,
}

impl RecentPlans<'_> {
    /// The controls of timeline step `step`: the last recent frame at or before it.
    fn control(&self, step: u64) -> ControlFrame {
        self.recent
            .iter()
            .rev()
            .find(|c| c.step <= step)
            .or(self.recent.front())
            .map_or(ControlFrame::silent(step), |c| ControlFrame { step, ..*c })
    }
}

impl Stepper for RecentPlans<'_> {
    fn step_together(
        &mut self,
        window: &mut crate::Generation<'_>,
        successor: &mut crate::Generation<'_>,
    ) -> Result<
        (crate::generate::StepOutput, crate::generate::StepOutput),
        crate::generate::GenerateError,
    > {
        let steps = [window.global_step(), successor.global_step()];
        let controls = steps.map(|s| self.control(s as u64));
        let steering = &mut *self.steering;
        // The concept meters see the window's fresh step only, after its steering.
        let mut observer = (!self.meters.is_empty()).then(|| self.meters.observer(self.model));
        window.step_together(successor, &mut |which, block, hidden| {
            let plan = steering.plan_for(&controls[which]);
            let hidden = if plan.is_empty() {
                hidden
            } else {
                plan.hook(steps[which]).after_block(block, hidden)
            };
            match &mut observer {
                Some(observer) if which == 0 => observer.after_block(block, hidden),
                _ => hidden,
            }
        })
    }

    fn step(
        &mut self,
        generation: &mut crate::Generation<'_>,
        fresh: bool,
    ) -> Result<crate::generate::StepOutput, crate::generate::GenerateError> {
        let step = generation.global_step() as u64;
        let control = self.control(step);
        let plan = self.steering.plan_for(&control);
        if fresh && !self.meters.is_empty() {
            generation.step_observed(plan, &mut self.meters.observer(self.model))
        } else {
            generation.step_steered(plan)
        }
    }
}
