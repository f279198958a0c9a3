//! The standalone app's own transport. nice-plug's cpal and dummy backends report "playing"
//! from the first sample on, forever, with a position that only counts up (JACK passes a real
//! transport, which is left alone): so the standalone editor has Play / Stop / ⏮ of its own.
//!
//! The GUI thread writes requests; the audio thread applies them at the start of each
//! `process()` call and keeps the song position, all in atomics (no lock, no allocation). The
//! audio thread then runs the timeline exactly as for a host transport: Play is a start at the
//! position (the engine seeks to its step), Stop is the stopped path (silence, the engine
//! idles), ⏮ is a jump to 0.

use std::sync::OnceLock;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};

use nice_plug::prelude::{Params, Transport};

use crate::params::{MusicrfmParams, SLOTS, SlotState};

#[derive(Debug, Default)]
pub struct StandaloneTransport {
    /// GUI writes (Play / Stop); audio thread reads.
    playing: AtomicBool,
    /// GUI bumps (⏮); the audio thread compares it with `rewinds_done`.
    rewinds: AtomicU64,
    /// Audio thread only (an atomic so the struct can be shared).
    rewinds_done: AtomicU64,
    /// Song position in samples at the next piece. Audio thread writes; GUI reads.
    position: AtomicU64,
    /// The audio thread's sample rate (f64 bits), for the GUI's clock. Audio thread writes.
    sample_rate: AtomicU64,
    /// Set by the audio thread once it runs inside the standalone wrapper.
    active: AtomicBool,
}

impl StandaloneTransport {
    pub fn set_playing(&self, playing: bool) {
        self.playing.store(playing, Release);
    }

    pub fn rewind(&self) {
        self.rewinds.fetch_add(1, AcqRel);
    }

    pub fn playing(&self) -> bool {
        self.playing.load(Acquire)
    }

    /// Seconds from the start of the timeline.
    pub fn position_seconds(&self) -> f64 {
        let rate = f64::from_bits(self.sample_rate.load(Relaxed));
        if rate > 0.0 {
            self.position.load(Relaxed) as f64 / rate
        } else {
            0.0
        }
    }

    /// Whether the audio thread runs in the standalone app.
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Audio thread, standalone only: the wrapper's always-playing transport replaced by
    /// ours, for a piece of `samples` samples; our position advances past it. Lock- and
    /// allocation-free.
    pub fn apply(&self, host: &Transport, samples: usize) -> Transport {
        let mut transport = Transport::new(host.sample_rate);
        transport.tempo = host.tempo;
        transport.time_sig_numerator = host.time_sig_numerator;
        transport.time_sig_denominator = host.time_sig_denominator;
        self.active.store(true, Relaxed);
        self.sample_rate
            .store(f64::from(transport.sample_rate).to_bits(), Relaxed);
        let rewinds = self.rewinds.load(Acquire);
        if rewinds != self.rewinds_done.load(Relaxed) {
            self.rewinds_done.store(rewinds, Relaxed);
            self.position.store(0, Relaxed);
        }
        let playing = self.playing.load(Acquire);
        let position = self.position.load(Relaxed);
        transport.playing = playing;
        transport.pos_seconds = Some(position as f64 / f64::from(transport.sample_rate));
        if playing {
            self.position.store(position + samples as u64, Relaxed);
        }
        transport
    }
}

/// What the standalone app was launched with, beyond nice-plug's own flags: it sets up the
/// instance the way a project would (`musicrfm_standalone --model DIR --prompt TEXT
/// --slot 1=FILE:CLASS --set slot1-strength=0.8 --play`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Launch {
    pub model: Option<String>,
    pub prompt: Option<String>,
    /// (0-based slot, file, class)
    pub slots: Vec<(usize, String, String)>,
    /// (parameter id, plain value)
    pub set: Vec<(String, f32)>,
    pub play: bool,
}

static LAUNCH: OnceLock<Launch> = OnceLock::new();

pub const LAUNCH_USAGE: &str = "musicrfm options (before nice-plug's own): --model <DIR|REPO_ID> \
--prompt <TEXT> --slot <K>=<FILE>:<CLASS> (K = 1..8) --set <PARAM_ID>=<VALUE> --play";

impl Launch {
    /// Take musicrfm's options out of `args` (the program name first); the rest is for
    /// nice-plug. The error names the flag at fault.
    pub fn parse(args: Vec<String>) -> Result<(Self, Vec<String>), String> {
        let mut launch = Self::default();
        let mut rest = Vec::new();
        let ids: Vec<String> = MusicrfmParams::default()
            .param_map()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .ok_or_else(|| format!("{flag}: a value is expected ({LAUNCH_USAGE})"))
            };
            match arg.as_str() {
                "--model" => launch.model = Some(value("--model")?),
                "--prompt" => launch.prompt = Some(value("--prompt")?),
                "--play" => launch.play = true,
                "--slot" => {
                    let spec = value("--slot")?;
                    let bad =
                        || format!("--slot {spec}: expected <K>=<FILE>:<CLASS>, K in 1..={SLOTS}");
                    let (k, target) = spec.split_once('=').ok_or_else(bad)?;
                    let (file, class) = target.rsplit_once(':').ok_or_else(bad)?;
                    let k: usize = k.trim().parse().map_err(|_| bad())?;
                    if !(1..=SLOTS).contains(&k) || file.is_empty() {
                        return Err(bad());
                    }
                    launch
                        .slots
                        .push((k - 1, file.to_owned(), class.to_owned()));
                }
                "--set" => {
                    let spec = value("--set")?;
                    let (id, v) = spec
                        .split_once('=')
                        .ok_or_else(|| format!("--set {spec}: expected <PARAM_ID>=<VALUE>"))?;
                    if !ids.iter().any(|known| known == id) {
                        return Err(format!("--set {spec}: no parameter `{id}`"));
                    }
                    let v: f32 = v
                        .parse()
                        .map_err(|_| format!("--set {spec}: `{v}` is not a number"))?;
                    launch.set.push((id.to_owned(), v));
                }
                _ => rest.push(arg),
            }
        }
        Ok((launch, rest))
    }

    /// Make this the setup every instance of this process starts with (the standalone's one).
    pub fn install(self) {
        let _ = LAUNCH.set(self);
    }

    fn apply(&self, params: &MusicrfmParams) {
        if let Some(model) = &self.model {
            *params.model.write() = model.clone();
        }
        if let Some(prompt) = &self.prompt {
            *params.prompt.write() = prompt.clone();
        }
        {
            let mut slots = params.slot_files.write();
            for (k, file, class) in &self.slots {
                slots[*k] = SlotState {
                    file: file.clone(),
                    class: class.clone(),
                    midi: false,
                };
            }
        }
        let map = params.param_map();
        for (id, value) in &self.set {
            if let Some((_, ptr, _)) = map.iter().find(|(known, _, _)| known == id) {
                // SAFETY: the pointer comes from `params`' own map and `params` is alive.
                unsafe {
                    ptr._internal_set_normalized_value(ptr.preview_normalized(*value));
                }
            }
        }
        params.transport.set_playing(self.play);
    }
}

/// Set a new instance up as the standalone app was launched (nothing inside a host).
pub fn apply_launch(params: &MusicrfmParams) {
    if let Some(launch) = LAUNCH.get() {
        launch.apply(params);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(t: &StandaloneTransport, samples: usize) -> (bool, f64) {
        let mut host = Transport::new(48_000.0);
        host.playing = true; // what the cpal / dummy backends always say
        host.pos_samples = Some(123_456);
        host.tempo = Some(120.0);
        let ours = t.apply(&host, samples);
        assert_eq!(ours.tempo, Some(120.0));
        assert_eq!(ours.pos_samples, None);
        (ours.playing, ours.pos_seconds.unwrap())
    }

    #[test]
    fn stop_holds_the_position_play_resumes_it_and_rewind_goes_to_zero() {
        let t = StandaloneTransport::default();
        assert_eq!(piece(&t, 480), (false, 0.0), "starts stopped at 0");
        t.set_playing(true);
        assert_eq!(piece(&t, 480), (true, 0.0));
        assert_eq!(piece(&t, 480), (true, 0.01));
        t.set_playing(false);
        assert_eq!(piece(&t, 480), (false, 0.02), "stopped: the position holds");
        assert_eq!(piece(&t, 480), (false, 0.02));
        t.set_playing(true);
        assert_eq!(
            piece(&t, 480),
            (true, 0.02),
            "play resumes where it stopped"
        );
        t.rewind();
        assert_eq!(piece(&t, 480), (true, 0.0), "⏮ jumps to the origin");
        assert!((t.position_seconds() - 0.01).abs() < 1e-12);
    }

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn launch_options_set_up_the_instance_and_leave_nice_plugs_flags() {
        let (launch, rest) = Launch::parse(args(
            "app --backend dummy --model /m --prompt lofi --slot 2=/d/a.safetensors:C \
             --set slot2-strength=0.8 --play --period-size 512",
        ))
        .unwrap();
        assert_eq!(rest, args("app --backend dummy --period-size 512"));
        let params = MusicrfmParams::default();
        launch.apply(&params);
        assert_eq!(*params.model.read(), "/m");
        assert_eq!(*params.prompt.read(), "lofi");
        assert_eq!(params.slot_files.read()[1].file, "/d/a.safetensors");
        assert_eq!(params.slot_files.read()[1].class, "C");
        assert!((params.slots.0[1].strength.value() - 0.8).abs() < 1e-6);
        assert!(params.transport.playing());
    }

    #[test]
    fn bad_launch_options_are_errors_naming_the_flag() {
        let error = |line: &str| Launch::parse(args(line)).unwrap_err();
        assert!(error("app --slot 9=/f:C").contains("--slot 9=/f:C"));
        assert!(error("app --set nope=1").contains("no parameter `nope`"));
        assert!(error("app --set master=loud").contains("`loud` is not a number"));
        assert!(error("app --model").contains("--model: a value is expected"));
    }
}
