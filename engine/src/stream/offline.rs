//! Driving a stream as an offline host does (`cargo xtask stream`, the engine's tests): the
//! one implementation of "push step s's control at its first host sample, wait for the block's
//! audio, pop it".

use std::time::Duration;

use super::{AudioEndpoint, ControlFrame, StreamError};

/// The first host sample of timeline step `step` at `rate` Hz (steps are 20 ms): `ceil(s·fs/50)`.
pub fn step_start(step: u64, rate: u32) -> u64 {
    (step * u64::from(rate)).div_ceil(50)
}

/// Bounce `out.len()` host samples of the stream from timeline step `from`'s start on, in
/// blocks whose sizes cycle through `blocks`. Before each block the controls of the steps
/// starting in it (`control(s)` for s < `steps`) are pushed (a full queue defers them to a
/// later block); then the block waits up to `wait` for its audio and pops it.
pub fn bounce(
    endpoint: &mut AudioEndpoint,
    rate: u32,
    (from, steps): (u64, u64),
    out: &mut [f32],
    blocks: &[usize],
    mut control: impl FnMut(u64) -> ControlFrame,
    wait: Duration,
) -> Result<(), StreamError> {
    let origin = step_start(from, rate);
    let samples = out.len();
    let (mut t, mut next) = (0usize, from);
    for &block in blocks.iter().cycle() {
        if t >= samples {
            break;
        }
        let n = block.max(1).min(samples - t);
        while next < steps && step_start(next, rate) < origin + (t + n) as u64 {
            if !endpoint.push_control(control(next)) {
                break;
            }
            next += 1;
        }
        if !endpoint.wait_for(n, wait) {
            return Err(StreamError::NoAudio {
                samples: t..t + n,
                waited: wait,
            });
        }
        endpoint.pop(&mut out[t..t + n]);
        t += n;
    }
    Ok(())
}
