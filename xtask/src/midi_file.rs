//! Standard MIDI files (SMF format 0 and 1) read into timed note events for `cargo xtask bounce
//! --midi`: note-on / note-off (a note-on with velocity 0 is a note-off) of every track and
//! channel, at seconds from the file's start under its tempo map (default 120 BPM). Everything
//! else (controllers, sysex, other meta events) is skipped. SMPTE time division is refused.

use std::path::Path;

use anyhow::{Context, anyhow, bail};

/// A note event at `seconds`: `velocity` 0..=1, or `None` for a note-off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MidiNote {
    pub seconds: f64,
    pub key: u8,
    pub velocity: Option<f64>,
}

pub fn read(path: &Path) -> anyhow::Result<Vec<MidiNote>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{}: not a standard MIDI file", path.display()))
}

/// A chunk reader over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let slice = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| anyhow!("truncated at byte {}", self.at))?;
        self.at += n;
        Ok(slice)
    }

    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> anyhow::Result<u32> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0, |v, &b| (v << 8) | u32::from(b)))
    }

    /// A variable-length quantity (7 bits per byte, at most 4 bytes).
    fn var(&mut self) -> anyhow::Result<u32> {
        let mut value = 0u32;
        for _ in 0..4 {
            let byte = self.u8()?;
            value = (value << 7) | u32::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!(
            "a variable-length number longer than 4 bytes at byte {}",
            self.at
        )
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

/// An event on the file's tick clock: a tempo change (µs per quarter) or a note.
enum Tick {
    Tempo(u32),
    Note { key: u8, velocity: Option<f64> },
}

pub fn parse(bytes: &[u8]) -> anyhow::Result<Vec<MidiNote>> {
    let mut file = Cursor { bytes, at: 0 };
    if file.take(4)? != b"MThd" {
        bail!("no MThd header");
    }
    let header_len = file.be(4)? as usize;
    let header = file.take(header_len)?;
    if header_len < 6 {
        bail!("MThd of {header_len} bytes");
    }
    let tracks = u16::from_be_bytes([header[2], header[3]]);
    let division = u16::from_be_bytes([header[4], header[5]]);
    if division & 0x8000 != 0 || division == 0 {
        bail!("SMPTE time division {division:#06x} is not supported");
    }
    let mut ticks: Vec<(u64, usize, Tick)> = Vec::new();
    for _ in 0..tracks {
        let kind = file.take(4)?;
        let len = file.be(4)? as usize;
        let body = file.take(len)?;
        if kind != b"MTrk" {
            continue; // an unknown chunk: skipped, as the standard says
        }
        let mut track = Cursor { bytes: body, at: 0 };
        let (mut tick, mut status) = (0u64, 0u8);
        while !track.done() {
            tick += u64::from(track.var()?);
            let mut byte = track.u8()?;
            if byte < 0x80 {
                if status == 0 {
                    bail!("running status without a status byte");
                }
                track.at -= 1; // a data byte: the previous status runs on
                byte = status;
            }
            let order = ticks.len();
            match byte {
                0xff => {
                    let kind = track.u8()?;
                    let len = track.var()? as usize;
                    let data = track.take(len)?;
                    if kind == 0x51 && len == 3 {
                        let tempo = data.iter().fold(0, |v, &b| (v << 8) | u32::from(b));
                        ticks.push((tick, order, Tick::Tempo(tempo)));
                    }
                }
                0xf0 | 0xf7 => {
                    let len = track.var()? as usize;
                    track.take(len)?;
                }
                _ => {
                    status = byte;
                    let data_len = match byte & 0xf0 {
                        0xc0 | 0xd0 => 1,
                        0x80..=0xe0 => 2,
                        _ => bail!("status byte {byte:#04x}"),
                    };
                    let data = track.take(data_len)?;
                    let key = data[0] & 0x7f;
                    match (byte & 0xf0, data.get(1).copied()) {
                        (0x90, Some(v)) if v > 0 => ticks.push((
                            tick,
                            order,
                            Tick::Note {
                                key,
                                velocity: Some(f64::from(v) / 127.0),
                            },
                        )),
                        (0x80, _) | (0x90, _) => ticks.push((
                            tick,
                            order,
                            Tick::Note {
                                key,
                                velocity: None,
                            },
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
    ticks.sort_by_key(|&(tick, order, _)| (tick, order));
    let (mut tempo, mut seconds, mut last) = (500_000u32, 0.0f64, 0u64);
    let mut notes = Vec::new();
    for (tick, _, event) in ticks {
        seconds += (tick - last) as f64 * f64::from(tempo) / 1e6 / f64::from(division);
        last = tick;
        match event {
            Tick::Tempo(t) => tempo = t,
            Tick::Note { key, velocity } => notes.push(MidiNote {
                seconds,
                key,
                velocity,
            }),
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format-1 file: a tempo track (120 → 60 BPM at beat 1) and a note track using running
    /// status and a velocity-0 note-off.
    fn file() -> Vec<u8> {
        let mut bytes = b"MThd\0\0\0\x06\0\x01\0\x02\x01\xe0".to_vec(); // 480 ticks per quarter
        let tempo: &[u8] = &[
            0x00, 0xff, 0x51, 0x03, 0x07, 0xa1, 0x20, // 120 BPM
            0x83, 0x60, 0xff, 0x51, 0x03, 0x0f, 0x42, 0x40, // at tick 480: 60 BPM
            0x00, 0xff, 0x2f, 0x00,
        ];
        let notes: &[u8] = &[
            0x00, 0x90, 60, 100, // C4 on at 0
            0x83, 0x60, 64, 127, // running status: E4 on at tick 480
            0x83, 0x60, 60, 0, // C4 off (velocity 0) at tick 960
            0x00, 0xb0, 7, 100, // a controller: skipped
            0x00, 0x80, 64, 0, // E4 off at 960
            0x00, 0xff, 0x2f, 0x00,
        ];
        for track in [tempo, notes] {
            bytes.extend_from_slice(b"MTrk");
            bytes.extend_from_slice(&(track.len() as u32).to_be_bytes());
            bytes.extend_from_slice(track);
        }
        bytes
    }

    #[test]
    fn notes_come_out_at_their_seconds_under_the_tempo_map() {
        let notes = parse(&file()).unwrap();
        let on = |seconds, key, v: f64| MidiNote {
            seconds,
            key,
            velocity: Some(v),
        };
        let off = |seconds, key| MidiNote {
            seconds,
            key,
            velocity: None,
        };
        assert_eq!(
            notes,
            [
                on(0.0, 60, 100.0 / 127.0),
                on(0.5, 64, 1.0),
                off(1.5, 60),
                off(1.5, 64)
            ]
        );
    }

    #[test]
    fn broken_files_are_errors() {
        assert!(parse(b"RIFF").is_err());
        let mut truncated = file();
        truncated.truncate(truncated.len() - 3);
        assert!(parse(&truncated).is_err());
        let mut smpte = file();
        smpte[12] = 0xe7;
        assert!(parse(&smpte).is_err());
    }
}
