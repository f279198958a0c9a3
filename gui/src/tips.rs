//! Tooltips, in musical terms.

pub const MODEL: &str = "The MusicGen model that writes the music: a model folder or a Hugging \
Face repo id already downloaded to this computer. Bigger models sound better and run slower.";
pub const CACHED: &str = "Models already downloaded to this computer's Hugging Face cache.";
pub const LOAD: &str = "Load this model. Playback restarts from the current position.";
pub const PROMPT: &str = "Describe the music: genre, instruments, mood, tempo. Press Enter (or \
Apply) and the music follows from the next 20 ms step; typing alone changes nothing.";
pub const MASTER: &str = "Scales every slot's push at once: 0 turns all steering off, 1 plays \
the strengths as drawn, 2 doubles them.";
pub const GATE: &str = "How often a steer acts: at 100 % every step and layer is pushed; lower \
values push randomly (seeded), a gentler and more varied effect.";
pub const FILE: &str = "A concept directions file (train-probes writes them): which musical \
concept this slot pushes toward — notes, chords, tempo… Enter applies.";
pub const BROWSE: &str = "List the directions files in this file's folder.";
pub const MIDI: &str = "Play this slot from a MIDI keyboard: a held note of pitch class p pushes \
toward class p of a notes file, as hard as you play it (× the strength).";
pub const CLASS: &str = "The class of the concept this slot pushes toward (a note, a chord \
quality, a tempo…).";
pub const STRENGTH: &str = "How hard this slot pushes the music toward its class; negative \
pushes away. This is the automatable parameter: draw it as a lane in your DAW. Drag (Shift: \
fine), scroll, or use the arrow keys; double-click resets to 0.";
pub const SHAPE: &str = "How the strength changes over time from where playback started: \
constant, rise, decay, exponential, logistic swell or a sine wave.";
pub const LENGTH: &str = "The shape's length in seconds (the period for the sine).";
pub const ALPHA: &str = "What the engine will apply to this slot over the next seconds: master × \
strength × shape. The line is fainter when the gate lets only some steps through.";
pub const METER: &str = "Live concept meter: how strongly the probe hears each class in the music \
being generated now (last 2 s). Move the fader and watch the class respond.";
pub const PLAY: &str = "Start the music from the current position (the standalone app's own \
transport; in a DAW, the DAW's transport rules).";
pub const STOP: &str = "Stop: silence, and the engine idles.";
pub const REWIND: &str = "Back to the start of the timeline.";
pub const STEPS_PER_SECOND: &str = "Decoder steps the engine manages per second. Real time needs \
50 (one step is 20 ms of music).";
pub const REAL_TIME: &str = "Generation speed ÷ playback speed. Below 1× live playback has gaps \
(underruns); bounce offline instead, which is exact at any speed.";
pub const SLOW_ON_CPU: &str = "On a CPU a decoder step reads all of the model's weights, so the \
memory's speed sets the pace: q4 reads 0.2 GB a step where q8, the CPU's default, reads 0.35, and \
a shorter context reads fewer of the music's past keys and values. Until it keeps up, live \
playback has gaps of silence (the timeline never shifts); an offline bounce is exact at any \
speed.";
pub const BUFFER: &str = "Music generated ahead and waiting to be played.";
pub const LATENCY: &str = "The delay the plugin reports to the DAW, which compensates it so the \
music lines up with its automation.";
pub const UNDERRUNS: &str = "Times the engine was late and silence played instead (the timeline \
never shifts).";
pub const PROMPT_PENDING: &str = "The prompt you applied is being encoded between the steps (T5 and \
the model's text keys and values, a piece at a time, so the music does not stop); the music takes \
it at the first step after.";
pub const SLIDES: &str = "Times the model's 30 s window moved on, re-prompted with the last 12 s.";
pub const POSITION: &str = "The step being generated, and its time from the origin.";
