//! The SynTheory concepts as MIDI built in code (docs/algorithms.md §7, after brown-palm/syntheory
//! `dataset/synthetic/*.py`): every clip of a concept, its attributes, and its note events.
//!
//! Clip order: the class varies fastest, then the other attributes, then the instrument, so a
//! `--limit` prefix is class-balanced. Notes run octave by octave from the middle outward
//! (4, 5, 3, 6, 2, 7, 1, 8, 0; all instruments per octave), so a prefix is the audible middle
//! range (octave 0 is MIDI 0–11, 8–15 Hz); the full set is the reference's.

use serde_json::{Map, Value, json};

pub const SAMPLE_RATE: u32 = 44_100;
pub const CLIP_SECONDS: f64 = 4.0;
pub const CLIP_SAMPLES: usize = 176_400;
/// Tonal concepts: 120 BPM, 4/4, 8 beats.
const BEAT: f64 = 0.5;
const VELOCITY: u8 = 64;
/// The reference renders on MIDI channel index 2 (drums on 9, the GM percussion channel).
pub const MELODIC_CHANNEL: u8 = 2;
pub const DRUM_CHANNEL: u8 = 9;

pub const CONCEPTS: [&str; 7] = [
    "notes",
    "intervals",
    "scales",
    "chords",
    "progressions",
    "tempos",
    "time_signatures",
];

pub const NOTE_NAMES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

/// The 92 General MIDI programs the reference renders tonal concepts with: all 128 minus Synth
/// Effects (96–103), Sound Effects (112–127) and 12 programs with unclear pitch or timbre.
pub fn instruments() -> Vec<u8> {
    const EXCLUDED: [u8; 12] = [8, 9, 14, 21, 22, 23, 31, 47, 55, 77, 78, 86];
    (0u8..128)
        .filter(|p| !(96..=103).contains(p) && !(112..=127).contains(p) && !EXCLUDED.contains(p))
        .collect()
}

/// `n` programs spread evenly over [`instruments`] (all 92 when `n` is `None` or ≥ 92).
pub fn pick_instruments(n: Option<usize>) -> Vec<u8> {
    let all = instruments();
    match n {
        Some(n) if n < all.len() => (0..n).map(|i| all[i * all.len() / n]).collect(),
        _ => all,
    }
}

pub const MODES: [(&str, [u8; 7]); 7] = [
    ("ionian", [0, 2, 4, 5, 7, 9, 11]),
    ("dorian", [0, 2, 3, 5, 7, 9, 10]),
    ("phrygian", [0, 1, 3, 5, 7, 8, 10]),
    ("lydian", [0, 2, 4, 6, 7, 9, 11]),
    ("mixolydian", [0, 2, 4, 5, 7, 9, 10]),
    ("aeolian", [0, 2, 3, 5, 7, 8, 10]),
    ("locrian", [0, 1, 3, 5, 6, 8, 10]),
];

/// Triads above the root: major (ionian 1-3-5), minor (aeolian), augmented (degree 3 of the
/// harmonic minor a minor third below), diminished (locrian).
pub const CHORD_TYPES: [(&str, [u8; 3]); 4] = [
    ("major", [0, 4, 7]),
    ("minor", [0, 3, 7]),
    ("aug", [0, 4, 8]),
    ("dim", [0, 3, 6]),
];

pub const INVERSIONS: [&str; 3] = ["root", "6", "64"];

/// Chord progressions as scale degrees (1-based) of ionian (first 10) or aeolian (last 9).
/// ASSUMPTION: the notes give the count (10 + 9) and two examples, not the list; these are
/// common pop/classical progressions of four chords.
pub const PROGRESSIONS: [(&str, &str, [u8; 4]); 19] = [
    ("I-IV-V-I", "ionian", [1, 4, 5, 1]),
    ("I-IV-vi-V", "ionian", [1, 4, 6, 5]),
    ("I-V-vi-IV", "ionian", [1, 5, 6, 4]),
    ("I-vi-IV-V", "ionian", [1, 6, 4, 5]),
    ("ii-V-I-vi", "ionian", [2, 5, 1, 6]),
    ("IV-I-V-vi", "ionian", [4, 1, 5, 6]),
    ("IV-V-iii-vi", "ionian", [4, 5, 3, 6]),
    ("V-IV-I-I", "ionian", [5, 4, 1, 1]),
    ("vi-IV-I-V", "ionian", [6, 4, 1, 5]),
    ("I-iii-IV-V", "ionian", [1, 3, 4, 5]),
    ("i-iidim-v-i", "aeolian", [1, 2, 5, 1]),
    ("i-iv-v-i", "aeolian", [1, 4, 5, 1]),
    ("i-iv-VI-v", "aeolian", [1, 4, 6, 5]),
    ("i-VI-III-VII", "aeolian", [1, 6, 3, 7]),
    ("i-VI-VII-i", "aeolian", [1, 6, 7, 1]),
    ("i-VI-VII-III", "aeolian", [1, 6, 7, 3]),
    ("i-VII-VI-VII", "aeolian", [1, 7, 6, 7]),
    ("iv-VII-i-i", "aeolian", [4, 7, 1, 1]),
    ("VI-VII-i-i", "aeolian", [6, 7, 1, 1]),
];

pub const TIME_SIGNATURES: [(u8, u8); 8] = [
    (2, 2),
    (2, 4),
    (3, 4),
    (3, 8),
    (4, 4),
    (6, 8),
    (9, 8),
    (12, 8),
];

/// A click sound: a GM drum key on the percussion channel, or a melodic program whose downbeat
/// is pitched higher than the other clicks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClickKit {
    pub name: &'static str,
    /// `None`: percussion channel.
    pub program: Option<u8>,
    pub downbeat_key: u8,
    pub offbeat_key: u8,
}

/// The five click kits (GM side stick and sticks; woodblock, taiko, synth drum programs).
pub const CLICK_KITS: [ClickKit; 5] = [
    ClickKit {
        name: "side_stick",
        program: None,
        downbeat_key: 37,
        offbeat_key: 37,
    },
    ClickKit {
        name: "sticks",
        program: None,
        downbeat_key: 31,
        offbeat_key: 31,
    },
    ClickKit {
        name: "woodblock",
        program: Some(115),
        downbeat_key: 79,
        offbeat_key: 72,
    },
    ClickKit {
        name: "taiko",
        program: Some(116),
        downbeat_key: 60,
        offbeat_key: 55,
    },
    ClickKit {
        name: "synth_drum",
        program: Some(118),
        downbeat_key: 60,
        offbeat_key: 55,
    },
];
const DOWNBEAT_VELOCITY: u8 = 100;
const OFFBEAT_VELOCITY: u8 = 75;
const CLICK_SECONDS: f64 = 0.1;
pub const REVERB_LEVELS: [u8; 3] = [0, 63, 127];
pub const BPM_RANGE: (u32, u32) = (50, 210);
const TEMPO_RENDER_SECONDS: f64 = 20.0;
const TEMPO_CROPS: usize = 5;
const METER_RENDER_SECONDS: f64 = 30.0;
const METER_CROPS: usize = 10;

/// One sounding note.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoteEvent {
    pub start: f64,
    pub duration: f64,
    pub key: u8,
    pub velocity: u8,
}

/// How one clip is made: a performance rendered for `render_seconds`, then the 4 s window at
/// `crop_start` seconds (0 for tonal concepts).
#[derive(Clone, Debug, PartialEq)]
pub struct ClipSpec {
    /// Class name (regression: the value as text).
    pub label: String,
    /// Class index (regression: 0).
    pub class_index: usize,
    /// Regression target (BPM), else `None`.
    pub value: Option<f64>,
    pub channel: u8,
    /// Program change before the first note (`None` on the percussion channel).
    pub program: Option<u8>,
    /// Controller 91 (reverb send), when the concept sets it.
    pub reverb: Option<u8>,
    pub notes: Vec<NoteEvent>,
    pub render_seconds: f64,
    pub crop_start: f64,
    /// Every attribute, for the manifest.
    pub attributes: Map<String, Value>,
}

/// Class names of `concept` (regression: one class).
pub fn classes(concept: &str) -> Vec<String> {
    match concept {
        "notes" => NOTE_NAMES.iter().map(|s| s.to_string()).collect(),
        "intervals" => (1..=12).map(|i| i.to_string()).collect(),
        "scales" => MODES.iter().map(|(m, _)| m.to_string()).collect(),
        "chords" => CHORD_TYPES.iter().map(|(c, _)| c.to_string()).collect(),
        "progressions" => PROGRESSIONS.iter().map(|(p, _, _)| p.to_string()).collect(),
        "tempos" => vec!["bpm".into()],
        "time_signatures" => TIME_SIGNATURES
            .iter()
            .map(|(n, d)| format!("{n}/{d}"))
            .collect(),
        _ => Vec::new(),
    }
}

/// The manifest attribute that holds the class.
pub fn label_key(concept: &str) -> &'static str {
    match concept {
        "notes" => "root_note_name",
        "intervals" => "interval",
        "scales" => "mode",
        "chords" => "chord_type",
        "progressions" => "progression",
        "tempos" => "bpm",
        _ => "time_signature",
    }
}

/// Tonic MIDI key of pitch class `pc`, keys centred on middle C.
pub fn tonic(pc: u8) -> u8 {
    if pc <= 5 { 60 + pc } else { 48 + pc }
}

fn note(start_beat: f64, beats: f64, key: u8) -> NoteEvent {
    NoteEvent {
        start: start_beat * BEAT,
        duration: beats * BEAT,
        key,
        velocity: VELOCITY,
    }
}

fn tonal(label: String, class_index: usize, program: u8, notes: Vec<NoteEvent>) -> ClipSpec {
    let mut attributes = Map::new();
    attributes.insert("program".into(), json!(program));
    attributes.insert("bpm".into(), json!(120));
    ClipSpec {
        label,
        class_index,
        value: None,
        channel: MELODIC_CHANNEL,
        program: Some(program),
        reverb: None,
        notes,
        render_seconds: CLIP_SECONDS,
        crop_start: 0.0,
        attributes,
    }
}

/// Every clip of `concept`, in order. `seed` draws the crop windows of the click concepts.
pub fn clips(concept: &str, programs: &[u8], seed: u64) -> anyhow::Result<Vec<ClipSpec>> {
    let mut out = Vec::new();
    match concept {
        "notes" => {
            for octave in [4u8, 5, 3, 6, 2, 7, 1, 8, 0] {
                for &program in programs {
                    for pc in 0..12u8 {
                        let key = 12 * octave + pc;
                        let notes = (0..4).map(|i| note(2.0 * i as f64, 2.0, key)).collect();
                        let mut c =
                            tonal(NOTE_NAMES[pc as usize].into(), pc.into(), program, notes);
                        c.attributes
                            .insert("root_note_name".into(), json!(NOTE_NAMES[pc as usize]));
                        c.attributes
                            .insert("root_note_pitch_class".into(), json!(pc));
                        c.attributes.insert("octave".into(), json!(octave));
                        c.attributes.insert("midi_note".into(), json!(key));
                        out.push(c);
                    }
                }
            }
        }
        "intervals" => {
            for &program in programs {
                for style in ["up", "down", "unison"] {
                    for base in 60u8..72 {
                        for iv in 1u8..=12 {
                            let (lo, hi) = (base, base + iv);
                            let notes = match style {
                                "up" | "down" => {
                                    let (a, b) = if style == "up" { (lo, hi) } else { (hi, lo) };
                                    (0..4)
                                        .flat_map(|i| {
                                            let t = 2.0 * i as f64;
                                            [note(t, 1.0, a), note(t + 1.0, 1.0, b)]
                                        })
                                        .collect()
                                }
                                _ => (0..8)
                                    .flat_map(|i| {
                                        [note(i as f64, 1.0, lo), note(i as f64, 1.0, hi)]
                                    })
                                    .collect(),
                            };
                            let mut c = tonal(iv.to_string(), usize::from(iv - 1), program, notes);
                            c.attributes.insert("interval".into(), json!(iv));
                            c.attributes.insert("play_style".into(), json!(style));
                            c.attributes.insert("base_midi_note".into(), json!(base));
                            c.attributes.insert(
                                "base_note_name".into(),
                                json!(NOTE_NAMES[usize::from(base % 12)]),
                            );
                            out.push(c);
                        }
                    }
                }
            }
        }
        "scales" => {
            for &program in programs {
                for direction in ["up", "down"] {
                    for pc in 0..12u8 {
                        for (m, (mode, steps)) in MODES.iter().enumerate() {
                            let root = tonic(pc);
                            let mut keys: Vec<u8> = steps.iter().map(|s| root + s).collect();
                            keys.push(root + 12);
                            if direction == "down" {
                                keys.reverse();
                            }
                            let notes = keys
                                .iter()
                                .enumerate()
                                .map(|(i, &k)| note(i as f64, 1.0, k))
                                .collect();
                            let mut c = tonal(mode.to_string(), m, program, notes);
                            c.attributes.insert("mode".into(), json!(mode));
                            c.attributes.insert(
                                "root_note_name".into(),
                                json!(NOTE_NAMES[usize::from(pc)]),
                            );
                            c.attributes.insert("play_style".into(), json!(direction));
                            out.push(c);
                        }
                    }
                }
            }
        }
        "chords" => {
            for &program in programs {
                for (inv, inversion) in INVERSIONS.iter().enumerate() {
                    for pc in 0..12u8 {
                        for (t, (chord, intervals)) in CHORD_TYPES.iter().enumerate() {
                            let root = tonic(pc);
                            let mut keys: Vec<u8> = intervals.iter().map(|i| root + i).collect();
                            for k in keys.iter_mut().take(inv) {
                                *k += 12;
                            }
                            keys.sort_unstable();
                            let notes = (0..4)
                                .flat_map(|i| {
                                    keys.iter().map(move |&k| note(2.0 * i as f64, 2.0, k))
                                })
                                .collect();
                            let mut c = tonal(chord.to_string(), t, program, notes);
                            c.attributes.insert("chord_type".into(), json!(chord));
                            c.attributes.insert(
                                "root_note_name".into(),
                                json!(NOTE_NAMES[usize::from(pc)]),
                            );
                            c.attributes.insert("inversion".into(), json!(inversion));
                            c.attributes.insert("midi_notes".into(), json!(keys));
                            out.push(c);
                        }
                    }
                }
            }
        }
        "progressions" => {
            for &program in programs {
                for pc in 0..12u8 {
                    for (p, (name, mode, degrees)) in PROGRESSIONS.iter().enumerate() {
                        let steps = MODES
                            .iter()
                            .find(|(m, _)| m == mode)
                            .map(|(_, s)| *s)
                            .unwrap_or_default();
                        let root = tonic(pc);
                        let mut notes = Vec::new();
                        for (i, &deg) in degrees.iter().enumerate() {
                            let d = usize::from(deg - 1);
                            // Diatonic triad; chord tones wrap inside the octave above the tonic.
                            for k in [d, (d + 2) % 7, (d + 4) % 7] {
                                notes.push(note(2.0 * i as f64, 2.0, root + steps[k]));
                            }
                        }
                        let mut c = tonal(name.to_string(), p, program, notes);
                        c.attributes.insert("progression".into(), json!(name));
                        c.attributes.insert("mode".into(), json!(mode));
                        c.attributes
                            .insert("key_note_name".into(), json!(NOTE_NAMES[usize::from(pc)]));
                        out.push(c);
                    }
                }
            }
        }
        "tempos" => {
            let mut rng = directions::Rng::new(seed);
            // BPMs in a strided order (37 is coprime to the 161 tempos) so a prefix spans the range.
            let n_bpm = BPM_RANGE.1 - BPM_RANGE.0 + 1;
            for crop in 0..TEMPO_CROPS {
                for kit in &CLICK_KITS {
                    for i in 0..n_bpm {
                        let bpm = BPM_RANGE.0 + (i * 37) % n_bpm;
                        let period = 60.0 / f64::from(bpm);
                        let crop_start = crop_offset(&mut rng, TEMPO_RENDER_SECONDS);
                        let mut c = clicks(kit, period, 4, TEMPO_RENDER_SECONDS, None);
                        c.label = bpm.to_string();
                        c.value = Some(f64::from(bpm));
                        c.crop_start = crop_start;
                        c.attributes.insert("bpm".into(), json!(bpm));
                        c.attributes.insert("crop".into(), json!(crop));
                        c.attributes
                            .insert("crop_start_s".into(), json!(crop_start));
                        out.push(c);
                    }
                }
            }
        }
        "time_signatures" => {
            let mut rng = directions::Rng::new(seed);
            for kit in &CLICK_KITS {
                for reverb in REVERB_LEVELS {
                    for crop in 0..METER_CROPS {
                        for (s, &(num, den)) in TIME_SIGNATURES.iter().enumerate() {
                            let compound = num % 3 == 0 && den != 4;
                            let click_beats = if compound { 0.5 } else { 4.0 / f64::from(den) };
                            let crop_start = crop_offset(&mut rng, METER_RENDER_SECONDS);
                            let mut c = clicks(
                                kit,
                                click_beats * BEAT,
                                usize::from(num),
                                METER_RENDER_SECONDS,
                                Some(reverb),
                            );
                            c.label = format!("{num}/{den}");
                            c.class_index = s;
                            c.crop_start = crop_start;
                            c.attributes.insert("time_signature".into(), json!(c.label));
                            c.attributes.insert("bpm".into(), json!(120));
                            c.attributes.insert("reverb_level".into(), json!(reverb));
                            c.attributes.insert("crop".into(), json!(crop));
                            c.attributes
                                .insert("crop_start_s".into(), json!(crop_start));
                            out.push(c);
                        }
                    }
                }
            }
        }
        other => anyhow::bail!("--concept {other:?} is not one of {}", CONCEPTS.join(", ")),
    }
    Ok(out)
}

/// A 4 s window start in whole samples, uniform over the rendered length.
fn crop_offset(rng: &mut directions::Rng, render_seconds: f64) -> f64 {
    let last = ((render_seconds - CLIP_SECONDS) * f64::from(SAMPLE_RATE)) as usize;
    rng.below(last + 1) as f64 / f64::from(SAMPLE_RATE)
}

/// A click track: one click every `period` seconds, a downbeat every `per_bar` clicks.
fn clicks(
    kit: &ClickKit,
    period: f64,
    per_bar: usize,
    seconds: f64,
    reverb: Option<u8>,
) -> ClipSpec {
    let n = (seconds / period).ceil() as usize;
    let notes = (0..n)
        .map(|i| {
            let down = i % per_bar == 0;
            NoteEvent {
                start: i as f64 * period,
                duration: CLICK_SECONDS.min(period),
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
        .filter(|n| n.start < seconds)
        .collect();
    let mut attributes = Map::new();
    attributes.insert("click_kit".into(), json!(kit.name));
    if let Some(p) = kit.program {
        attributes.insert("program".into(), json!(p));
    }
    ClipSpec {
        label: String::new(),
        class_index: 0,
        value: None,
        channel: if kit.program.is_some() {
            MELODIC_CHANNEL
        } else {
            DRUM_CHANNEL
        },
        program: kit.program,
        reverb,
        notes,
        render_seconds: seconds,
        crop_start: 0.0,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ninety_two_instruments() {
        let all = instruments();
        assert_eq!(all.len(), 92);
        assert!(!all.contains(&47) && !all.contains(&100) && !all.contains(&120));
        assert_eq!(pick_instruments(Some(1)), vec![0]);
        assert_eq!(pick_instruments(Some(4)).len(), 4);
    }

    #[test]
    fn full_counts_match_the_reference() {
        let p = instruments();
        let count = |c| clips(c, &p, 0).unwrap().len();
        assert_eq!(count("notes"), 9936);
        assert_eq!(count("intervals"), 39744);
        assert_eq!(count("chords"), 13248);
        assert_eq!(count("scales"), 15456);
        assert_eq!(count("progressions"), 20976);
        assert_eq!(clips("tempos", &[], 0).unwrap().len(), 4025);
        assert_eq!(clips("time_signatures", &[], 0).unwrap().len(), 1200);
    }

    #[test]
    fn pitch_class_sets() {
        let chords = clips("chords", &[0], 0).unwrap();
        for c in &chords {
            let root = NOTE_NAMES
                .iter()
                .position(|n| c.attributes["root_note_name"] == *n)
                .unwrap() as u8;
            let mut pcs: Vec<u8> = c.notes.iter().map(|n| (n.key + 12 - root) % 12).collect();
            pcs.sort_unstable();
            pcs.dedup();
            assert_eq!(
                pcs,
                CHORD_TYPES[c.class_index].1.to_vec(),
                "{:?}",
                c.attributes
            );
        }
        // aug = degree 3 of the harmonic minor a minor third below: C aug = C E G#.
        let steps = [0u8, 2, 3, 5, 7, 8, 11];
        let aug: Vec<u8> = [2, 4, 6].iter().map(|&k| (steps[k] + 9) % 12).collect();
        assert_eq!(aug, vec![0, 4, 8]);
        for c in clips("intervals", &[0], 0).unwrap() {
            let keys: Vec<u8> = c.notes.iter().map(|n| n.key).collect();
            let span = keys.iter().max().unwrap() - keys.iter().min().unwrap();
            assert_eq!(usize::from(span), c.class_index + 1);
        }
    }

    #[test]
    fn limit_prefix_is_balanced() {
        let notes = clips("notes", &[0], 0).unwrap();
        assert!(
            notes[..24]
                .iter()
                .enumerate()
                .all(|(i, c)| c.class_index == i % 12)
        );
        assert_eq!(notes[0].notes[0].key, 48);
    }
}
