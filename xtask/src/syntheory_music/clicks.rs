//! The click concepts (tempos, time signatures) after SynTheory's `tempos.py`,
//! `time_signatures.py`, `metronome_configs.py` and `midi.py::write_click`.

use serde_json::{Map, json};

use super::{
    CLIP_SECONDS, ClipSpec, DRUM_CHANNEL, MELODIC_CHANNEL, NoteEvent, SAMPLE_RATE, TEMPO_120_BPM,
    TICKS_PER_BEAT, TIME_SIGNATURES,
};

/// A click sound (`midi.py::ClickTrackConfig`): every kit marks the downbeat by pitch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClickKit {
    pub name: &'static str,
    pub channel: u8,
    pub program: u8,
    pub downbeat_key: u8,
    pub offbeat_key: u8,
}

const fn kit(name: &'static str, channel: u8, program: u8, down: u8, off: u8) -> ClickKit {
    ClickKit {
        name,
        channel,
        program,
        downbeat_key: down,
        offbeat_key: off,
    }
}

/// `metronome_configs.py::CLICK_CONFIGS`: the GM drum kit (`SHEETSAGE_DRUM_CLICK`, side stick /
/// sticks), woodblock (115) dark and light, taiko (116), synth drum (118).
pub const CLICK_KITS: [ClickKit; 5] = [
    kit("default", DRUM_CHANNEL, 0, 37, 31),
    kit("woodblock_dark", MELODIC_CHANNEL, 115, 37, 31),
    kit("woodblock_light", MELODIC_CHANNEL, 115, 52, 48),
    kit("taiko", MELODIC_CHANNEL, 116, 52, 48),
    kit("synth_drum", MELODIC_CHANNEL, 118, 52, 48),
];
const DOWNBEAT_VELOCITY: u8 = 100;
const OFFBEAT_VELOCITY: u8 = 75;
/// `midi.py::REVERB_LEVELS` (CC91 values of reverb levels 0, 1, 2).
pub const REVERB_LEVELS: [u8; 3] = [0, 63, 127];
pub const BPM_RANGE: (u32, u32) = (50, 210);
/// Click renders are cut to this length (`trim`) before the random 4 s crops.
const TEMPO_RENDER_SECONDS: f64 = 20.0;
const TEMPO_CROPS: usize = 5;
const METER_RENDER_SECONDS: f64 = 30.0;
const METER_CROPS: usize = 10;

/// `bpm2tempo(bpm)`: microseconds per quarter note, rounded.
pub fn tempo_us(bpm: u32) -> u32 {
    (60e6 / f64::from(bpm)).round() as u32
}

/// `tempos.py`: 4/4 clicks at every BPM 50–210 (`bpm // 3` beats, just over 20 s), 5 kits, no
/// reverb, cut to 20 s, 5 random 4 s crops each.
pub(super) fn tempo_clips(seed: u64) -> Vec<ClipSpec> {
    let mut rng = directions::Rng::new(seed);
    let mut out = Vec::new();
    // BPMs in a strided order (37 is coprime to the 161 tempos) so a prefix spans the range.
    let n_bpm = BPM_RANGE.1 - BPM_RANGE.0 + 1;
    for crop in 0..TEMPO_CROPS {
        for kit in &CLICK_KITS {
            for i in 0..n_bpm {
                let bpm = BPM_RANGE.0 + (i * 37) % n_bpm;
                let mut c = clicks(kit, tempo_us(bpm), (4, 4), bpm / 3, 0, TEMPO_RENDER_SECONDS);
                c.label = bpm.to_string();
                c.value = Some(f64::from(bpm));
                c.crop_start = crop_offset(&mut rng, c.render_seconds);
                let start = c.crop_start;
                out.push(
                    c.with("bpm", json!(bpm))
                        .with("crop", json!(crop))
                        .with("crop_start_s", json!(start)),
                );
            }
        }
    }
    out
}

/// `time_signatures.py`: 120 BPM clicks (`den/4 · 60` beats, just over 30 s) at 3 reverb levels,
/// 5 kits, cut to 30 s, 10 random 4 s crops each.
pub(super) fn time_signature_clips(seed: u64) -> Vec<ClipSpec> {
    let mut rng = directions::Rng::new(seed);
    let mut out = Vec::new();
    for kit in &CLICK_KITS {
        for reverb in REVERB_LEVELS {
            for crop in 0..METER_CROPS {
                for (s, &(num, den)) in TIME_SIGNATURES.iter().enumerate() {
                    let beats = u32::from(den) * 15;
                    let mut c = clicks(
                        kit,
                        TEMPO_120_BPM,
                        (num, den),
                        beats,
                        reverb,
                        METER_RENDER_SECONDS,
                    );
                    c.label = format!("{num}/{den}");
                    c.class_index = s;
                    c.crop_start = crop_offset(&mut rng, c.render_seconds);
                    let (label, start) = (c.label.clone(), c.crop_start);
                    out.push(
                        c.with("time_signature", json!(label))
                            .with("is_compound", json!(is_compound(num, den)))
                            .with("bpm", json!(120))
                            .with("reverb_level", json!(reverb))
                            .with("crop", json!(crop))
                            .with("crop_start_s", json!(start)),
                    );
                }
            }
        }
    }
    out
}

/// A 4 s window start in whole samples, uniform over the rendered length.
fn crop_offset(rng: &mut directions::Rng, render_seconds: f64) -> f64 {
    let last = ((render_seconds - CLIP_SECONDS) * f64::from(SAMPLE_RATE)) as usize;
    rng.below(last + 1) as f64 / f64::from(SAMPLE_RATE)
}

/// `midi.py::is_compound_time_signature`.
fn is_compound(num: u8, den: u8) -> bool {
    num.is_multiple_of(3) && den != 4
}

/// `midi.py::write_click`: CC91 = `reverb`, then `beats + 1` clicks, each held until the next;
/// a click per eighth in compound time, else per 1/den note; the downbeat every `num` clicks.
fn clicks(
    kit: &ClickKit,
    tempo_us: u32,
    (num, den): (u8, u8),
    beats: u32,
    reverb: u8,
    render_seconds: f64,
) -> ClipSpec {
    let ticks = if is_compound(num, den) {
        TICKS_PER_BEAT / 2
    } else {
        TICKS_PER_BEAT * 4 / u32::from(den)
    };
    let notes = (0..=beats)
        .map(|b| {
            let down = b % u32::from(num) == 0;
            NoteEvent {
                tick: b * ticks,
                ticks,
                key: if down {
                    kit.downbeat_key
                } else {
                    kit.offbeat_key
                },
                velocity: if down {
                    DOWNBEAT_VELOCITY
                } else {
                    OFFBEAT_VELOCITY
                },
            }
        })
        .collect();
    let mut attributes = Map::new();
    attributes.insert("click_kit".into(), json!(kit.name));
    attributes.insert("program".into(), json!(kit.program));
    ClipSpec {
        label: String::new(),
        class_index: 0,
        value: None,
        tempo_us,
        channel: kit.channel,
        program: kit.program,
        reverb: Some(reverb),
        notes,
        render_seconds,
        crop_start: 0.0,
        attributes,
    }
}
