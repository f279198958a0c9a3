//! The SynTheory concepts as MIDI built in code (docs/algorithms.md §7), following brown-palm/syntheory
//! `dataset/synthetic/*.py` and `dataset/music/{constants,transforms,midi}.py`: every clip of a
//! concept, its attributes, and its MIDI events in ticks (480 per beat), as the reference's mido
//! track would hold them.
//!
//! Clip order: the class varies fastest, then the other attributes, then the instrument, so a
//! `--limit` prefix is class-balanced (the reference iterates class-slowest). Notes run octave by
//! octave from the middle outward (4, 5, 3, 6, 2, 7, 1, 8, 0; all instruments per octave), so a
//! prefix is the audible middle range; the full set is the reference's.

use serde_json::{Map, Value, json};

mod clicks;

pub const SAMPLE_RATE: u32 = 44_100;
pub const CLIP_SECONDS: f64 = 4.0;
pub const CLIP_SAMPLES: usize = 176_400;
/// `create_midi_file(ticks_per_beat=480)`.
pub const TICKS_PER_BEAT: u32 = 480;
/// Tonal concepts and time signatures play at 120 BPM: `bpm2tempo(120)` µs per quarter note.
pub(crate) const TEMPO_120_BPM: u32 = 500_000;
/// `write_melody` / `write_progression` velocity (note-on and note-off).
const VELOCITY: u8 = 64;
/// Tonal concepts play on MIDI channel index 2; the GM percussion channel is 9.
pub const MELODIC_CHANNEL: u8 = 2;
pub const DRUM_CHANNEL: u8 = 9;

/// A SynTheory concept; the snake_case name is the `--concept` value and the `concept` of
/// `dataset.json` and the manifest.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[value(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Concept {
    Notes,
    Intervals,
    Scales,
    Chords,
    Progressions,
    Tempos,
    TimeSignatures,
}

impl Concept {
    pub fn name(self) -> &'static str {
        match self {
            Concept::Notes => "notes",
            Concept::Intervals => "intervals",
            Concept::Scales => "scales",
            Concept::Chords => "chords",
            Concept::Progressions => "progressions",
            Concept::Tempos => "tempos",
            Concept::TimeSignatures => "time_signatures",
        }
    }

    /// BPM regression (tempos) rather than classification.
    pub fn is_regression(self) -> bool {
        self == Concept::Tempos
    }

    /// Class names (regression: one class).
    pub fn classes(self) -> Vec<String> {
        match self {
            Concept::Notes => NOTE_NAMES.iter().map(|s| s.to_string()).collect(),
            Concept::Intervals => (1..=12).map(|i| i.to_string()).collect(),
            Concept::Scales => MODES.iter().map(|(m, _)| m.to_string()).collect(),
            Concept::Chords => CHORD_TYPES.iter().map(|c| c.to_string()).collect(),
            Concept::Progressions => PROGRESSIONS.iter().map(|p| p.name.to_string()).collect(),
            Concept::Tempos => vec!["bpm".into()],
            Concept::TimeSignatures => TIME_SIGNATURES
                .iter()
                .map(|(n, d)| format!("{n}/{d}"))
                .collect(),
        }
    }

    /// The manifest attribute that holds the class.
    pub fn label_key(self) -> &'static str {
        match self {
            Concept::Notes => "root_note_name",
            Concept::Intervals => "interval",
            Concept::Scales => "mode",
            Concept::Chords => "chord_type",
            Concept::Progressions => "progression",
            Concept::Tempos => "bpm",
            Concept::TimeSignatures => "time_signature",
        }
    }

    /// Every clip, in order; `programs` are the instruments of the tonal concepts, `seed` draws
    /// the crop windows of the click concepts.
    pub fn clips(self, programs: &[u8], seed: u64) -> Vec<ClipSpec> {
        match self {
            Concept::Notes => note_clips(programs),
            Concept::Intervals => interval_clips(programs),
            Concept::Scales => scale_clips(programs),
            Concept::Chords => chord_clips(programs),
            Concept::Progressions => progression_clips(programs),
            Concept::Tempos => clicks::tempo_clips(seed),
            Concept::TimeSignatures => clicks::time_signature_clips(seed),
        }
    }
}

/// `PITCH_CLASS_TO_NOTE_NAME_SHARP`.
pub const NOTE_NAMES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

/// The 92 General MIDI programs the reference renders tonal concepts with
/// (`get_instruments(ignore_atonal, ignore_polyphonic, ignore_highly_articulate)`): all 128 minus
/// Synth Effects (96–103), Sound Effects (112–127), the "polyphonic" {8, 9, 14, 21, 23, 47, 86}
/// and the "highly articulate" {22, 31, 55, 77, 78}.
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

const IONIAN: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
const AEOLIAN: [u8; 7] = [0, 2, 3, 5, 7, 8, 10];
const HARMONIC_MINOR: [u8; 7] = [0, 2, 3, 5, 7, 8, 11];
const LOCRIAN: [u8; 7] = [0, 1, 3, 5, 6, 8, 10];

/// The seven modes of `scales.py::get_all_scales`, in its order.
pub const MODES: [(&str, [u8; 7]); 7] = [
    ("ionian", IONIAN),
    ("dorian", [0, 2, 3, 5, 7, 9, 10]),
    ("phrygian", [0, 1, 3, 5, 7, 8, 10]),
    ("lydian", [0, 2, 4, 6, 7, 9, 11]),
    ("mixolydian", [0, 2, 4, 5, 7, 9, 10]),
    ("aeolian", AEOLIAN),
    ("locrian", LOCRIAN),
];

/// `chords.py::_CHORD_MAP`, in its order.
pub const CHORD_TYPES: [&str; 4] = ["major", "minor", "aug", "dim"];

/// `inversion or "5"`: root position, first ("6") and second ("64") inversion.
pub const INVERSIONS: [&str; 3] = ["5", "6", "64"];

/// One chord progression of `chord_progressions.py::PROGRESSIONS`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progression {
    pub name: &'static str,
    pub mode: &'static str,
    pub degrees: [u8; 4],
}

const fn prog(name: &'static str, mode: &'static str, degrees: [u8; 4]) -> Progression {
    Progression {
        name,
        mode,
        degrees,
    }
}

/// `chord_progressions.py::PROGRESSIONS`, in its order (names are ours: Roman numerals).
pub const PROGRESSIONS: [Progression; 19] = [
    prog("I-IV-V-I", "ionian", [1, 4, 5, 1]),
    prog("I-IV-vi-V", "ionian", [1, 4, 6, 5]),
    prog("I-V-vi-IV", "ionian", [1, 5, 6, 4]),
    prog("I-vi-IV-V", "ionian", [1, 6, 4, 5]),
    prog("ii-V-I-vi", "ionian", [2, 5, 1, 6]),
    prog("IV-I-V-vi", "ionian", [4, 1, 5, 6]),
    prog("IV-V-iii-vi", "ionian", [4, 5, 3, 6]),
    prog("V-IV-I-V", "ionian", [5, 4, 1, 5]),
    prog("V-vi-IV-I", "ionian", [5, 6, 4, 1]),
    prog("vi-IV-I-V", "ionian", [6, 4, 1, 5]),
    prog("i-iidim-v-i", "aeolian", [1, 2, 5, 1]),
    prog("i-III-iv-i", "aeolian", [1, 3, 4, 1]),
    prog("i-iv-v-i", "aeolian", [1, 4, 5, 1]),
    prog("i-VI-III-VII", "aeolian", [1, 6, 3, 7]),
    prog("i-VI-VII-i", "aeolian", [1, 6, 7, 1]),
    prog("i-VI-VII-III", "aeolian", [1, 6, 7, 3]),
    prog("i-VII-VI-iv", "aeolian", [1, 7, 6, 4]),
    prog("iv-VII-i-i", "aeolian", [4, 7, 1, 1]),
    prog("VII-VI-VII-i", "aeolian", [7, 6, 7, 1]),
];

/// `time_signatures.py::get_all_time_signatures`.
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

/// One note: on at `tick`, off `ticks` later, with the same velocity both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoteEvent {
    pub tick: u32,
    pub ticks: u32,
    pub key: u8,
    pub velocity: u8,
}

/// How one clip is made: a one-track MIDI performance (tempo, program change on `channel`, an
/// optional CC91, notes) rendered for `render_seconds`, then the 4 s window at `crop_start`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipSpec {
    /// Class name (regression: the value as text).
    pub label: String,
    /// Class index (regression: 0).
    pub class_index: usize,
    /// Regression target (BPM), else `None`.
    pub value: Option<f64>,
    /// Microseconds per quarter note (`bpm2tempo`).
    pub tempo_us: u32,
    pub channel: u8,
    /// Program change before the first note (sent on the percussion channel too).
    pub program: u8,
    /// Controller 91 (reverb send) before the first note, when the concept sets it.
    pub reverb: Option<u8>,
    pub notes: Vec<NoteEvent>,
    pub render_seconds: f64,
    pub crop_start: f64,
    /// Every attribute, for the manifest.
    pub attributes: Map<String, Value>,
}

impl ClipSpec {
    /// Seconds at `tick` under this clip's tempo.
    pub fn seconds(&self, tick: u32) -> f64 {
        f64::from(tick) * f64::from(self.tempo_us) / (f64::from(TICKS_PER_BEAT) * 1e6)
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.attributes.insert(key.into(), value);
        self
    }
}

/// `transforms.py::get_tonic_midi_note_value`: keys centred on middle C (C…F from 60 up,
/// F#…B from 54 up).
pub fn tonic(pc: u8) -> u8 {
    if pc <= 5 { 60 + pc } else { 48 + pc }
}

/// `transforms.py::get_chord` for a triad: scale degrees `degree`, +2, +4 (1-based) of the mode
/// `steps` on `tonic`, each wrapped into the octave above the tonic, in that order.
pub fn diatonic_triad(tonic: u8, steps: &[u8; 7], degree: u8) -> [u8; 3] {
    let d = usize::from(degree - 1);
    [d, d + 2, d + 4].map(|k| tonic + steps[k % 7])
}

/// `get_{major,minor,augmented,diminished}_triad` of pitch class `pc`, in `inversion` (index of
/// [`INVERSIONS`]): the lowest `inversion` notes move up an octave and to the end.
pub fn triad(pc: u8, chord_type: &str, inversion: usize) -> [u8; 3] {
    let mut keys = match chord_type {
        "major" => diatonic_triad(tonic(pc), &IONIAN, 1),
        "minor" => diatonic_triad(tonic(pc), &AEOLIAN, 1),
        // The III of the harmonic minor a minor third below; its tonic is centred on middle C,
        // so F#, G and G# come out an octave above their major triads.
        "aug" => diatonic_triad(tonic((pc + 9) % 12), &HARMONIC_MINOR, 3),
        _ => diatonic_triad(tonic(pc), &LOCRIAN, 1),
    };
    for k in keys.iter_mut().take(inversion) {
        *k += 12;
    }
    keys.rotate_left(inversion);
    keys
}

/// `write_melody`: each key for `beats` beats, one after another.
fn melody(keys: &[u8], beats: u32) -> Vec<NoteEvent> {
    let ticks = beats * TICKS_PER_BEAT;
    let at = (0u32..).map(|i| i * ticks);
    keys.iter()
        .zip(at)
        .map(|(&key, tick)| NoteEvent {
            tick,
            ticks,
            key,
            velocity: VELOCITY,
        })
        .collect()
}

/// `write_progression`: each chord (all keys at once) for `beats` beats, one after another.
fn progression<'a>(chords: impl IntoIterator<Item = &'a [u8]>, beats: u32) -> Vec<NoteEvent> {
    let ticks = beats * TICKS_PER_BEAT;
    chords
        .into_iter()
        .zip((0u32..).map(|i| i * ticks))
        .flat_map(|(keys, tick)| {
            keys.iter().map(move |&key| NoteEvent {
                tick,
                ticks,
                key,
                velocity: VELOCITY,
            })
        })
        .collect()
}

/// A tonal clip: 120 BPM on the melodic channel, no controller, as long as its MIDI (4 s).
fn tonal(label: &str, class_index: usize, program: u8, notes: Vec<NoteEvent>) -> ClipSpec {
    let mut c = ClipSpec {
        label: label.to_owned(),
        class_index,
        value: None,
        tempo_us: TEMPO_120_BPM,
        channel: MELODIC_CHANNEL,
        program,
        reverb: None,
        notes,
        render_seconds: CLIP_SECONDS,
        crop_start: 0.0,
        attributes: Map::new(),
    };
    c.render_seconds = c.seconds(c.notes.iter().map(|n| n.tick + n.ticks).max().unwrap_or(0));
    c.with("program", json!(program)).with("bpm", json!(120))
}

/// `notes.py`: MIDI 0–107, each note 4× for 2 beats.
fn note_clips(programs: &[u8]) -> Vec<ClipSpec> {
    let mut out = Vec::new();
    for octave in [4u8, 5, 3, 6, 2, 7, 1, 8, 0] {
        for &program in programs {
            for pc in 0..12u8 {
                let key = 12 * octave + pc;
                let name = NOTE_NAMES[usize::from(pc)];
                let notes = progression([&[key][..]; 4], 2);
                out.push(
                    tonal(name, pc.into(), program, notes)
                        .with("root_note_name", json!(name))
                        .with("root_note_pitch_class", json!(pc))
                        .with("octave", json!(octave))
                        // notes.py::get_register: bisect((3, 6, 9), octave)
                        .with("register", json!((octave >= 3) as u8 + (octave >= 6) as u8))
                        .with("midi_note", json!(key)),
                );
            }
        }
    }
    out
}

/// `intervals.py`: base MIDI 60–71, upper = base + 1…12; UP and DOWN alternate the two notes
/// (1 beat each, 4×), UNISON plays both together 8× for 1 beat.
fn interval_clips(programs: &[u8]) -> Vec<ClipSpec> {
    let mut out = Vec::new();
    for &program in programs {
        for style in ["up", "down", "unison"] {
            for base in 60u8..72 {
                for iv in 1u8..=12 {
                    let (lo, hi) = (base, base + iv);
                    let notes = match style {
                        "up" => melody(&[lo, hi].repeat(4), 1),
                        "down" => melody(&[hi, lo].repeat(4), 1),
                        _ => progression([&[lo, hi][..]; 8], 1),
                    };
                    out.push(
                        tonal(&iv.to_string(), usize::from(iv - 1), program, notes)
                            .with("interval", json!(iv))
                            .with("play_style", json!(style))
                            .with("base_midi_note", json!(base))
                            .with("base_note_name", json!(NOTE_NAMES[usize::from(base % 12)])),
                    );
                }
            }
        }
    }
    out
}

/// `scales.py`: the 7 notes and the octave from the centred tonic, 1 beat each, up or down.
fn scale_clips(programs: &[u8]) -> Vec<ClipSpec> {
    let mut out = Vec::new();
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
                    out.push(
                        tonal(mode, m, program, melody(&keys, 1))
                            .with("mode", json!(mode))
                            .with("root_note_name", json!(NOTE_NAMES[usize::from(pc)]))
                            .with("play_style", json!(direction)),
                    );
                }
            }
        }
    }
    out
}

/// `chords.py`: every triad type on every pitch class in 3 inversions, 4× for 2 beats.
fn chord_clips(programs: &[u8]) -> Vec<ClipSpec> {
    let mut out = Vec::new();
    for &program in programs {
        for (inv, inversion) in INVERSIONS.iter().enumerate() {
            for pc in 0..12u8 {
                for (t, chord) in CHORD_TYPES.iter().enumerate() {
                    let keys = triad(pc, chord, inv);
                    out.push(
                        tonal(chord, t, program, progression([&keys[..]; 4], 2))
                            .with("chord_type", json!(chord))
                            .with("root_note_name", json!(NOTE_NAMES[usize::from(pc)]))
                            .with("inversion", json!(inversion))
                            .with("midi_notes", json!(keys)),
                    );
                }
            }
        }
    }
    out
}

/// `chord_progressions.py`: four root-position diatonic triads, 2 beats each, in every key.
fn progression_clips(programs: &[u8]) -> Vec<ClipSpec> {
    let mut out = Vec::new();
    for &program in programs {
        for pc in 0..12u8 {
            for (p, pr) in PROGRESSIONS.iter().enumerate() {
                let steps = if pr.mode == "ionian" {
                    &IONIAN
                } else {
                    &AEOLIAN
                };
                let chords = pr.degrees.map(|deg| diatonic_triad(tonic(pc), steps, deg));
                let degrees = pr.degrees.map(|d| d.to_string()).join(", ");
                out.push(
                    tonal(
                        pr.name,
                        p,
                        program,
                        progression(chords.iter().map(|c| &c[..]), 2),
                    )
                    .with("progression", json!(pr.name))
                    .with(
                        "chord_progression",
                        json!(format!("{}-({degrees})", pr.mode)),
                    )
                    .with("mode", json!(pr.mode))
                    .with("key_note_name", json!(NOTE_NAMES[usize::from(pc)])),
                );
            }
        }
    }
    out
}

/// One channel message of a clip's track: at `tick`, `status` (command | channel), two data
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MidiMessage {
    pub tick: u32,
    pub status: u8,
    pub data1: u8,
    pub data2: u8,
}

/// The channel messages of `spec` in the order of the reference's mido track: program change,
/// CC91 when set, then the notes; at one tick the note-offs come before the note-ons.
pub fn midi_messages(spec: &ClipSpec) -> Vec<MidiMessage> {
    let ch = spec.channel;
    let msg = |tick, status: u8, data1, data2| MidiMessage {
        tick,
        status: status | ch,
        data1,
        data2,
    };
    // (tick, rank, message): controls, then note-offs, then note-ons.
    let mut out = vec![(0, 0, msg(0, 0xC0, spec.program, 0))];
    if let Some(r) = spec.reverb {
        out.push((0, 0, msg(0, 0xB0, 91, r)));
    }
    for n in &spec.notes {
        out.push((n.tick, 2, msg(n.tick, 0x90, n.key, n.velocity)));
        let off = n.tick + n.ticks;
        out.push((off, 1, msg(off, 0x80, n.key, n.velocity)));
    }
    out.sort_by_key(|&(tick, rank, _)| (tick, rank));
    out.into_iter().map(|(_, _, m)| m).collect()
}

#[cfg(test)]
mod reference_tests;

#[cfg(test)]
mod tests;
