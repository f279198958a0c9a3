//! Time schedules c(t) for a steering strength η (MusicRFM §4.3 and our decisions): t is the
//! global decoder step (0-based, one 20 ms frame per step), whatever the gates did.

use std::f64::consts::PI;

/// How a steer's coefficient evolves over decoder steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// c(t) = η
    Constant,
    /// 0 before `t0`, η from `t1`, linear in between.
    LinearRise { t0: usize, t1: usize },
    /// c(t) = η (1 − clip(t / T, 0, 1))
    LinearDecay { steps: usize },
    /// c(t) = η r^t
    ExpDecay { rate: f64 },
    /// c(t) = η / (1 + exp(−k (t − mid)))
    LogisticRise { mid: f64, k: f64 },
    /// c(t) = η (1 + sin(2π t / P)) / 2
    Sine { period: f64 },
    /// c(t) = η · v(t), v supplied per step from outside (automation lanes, faders).
    External,
}

impl Schedule {
    /// The coefficient at global step `t`; `external` is v(t) for [`Schedule::External`].
    pub fn coefficient(&self, eta: f32, t: usize, external: f32) -> f32 {
        let eta = eta as f64;
        let t = t as f64;
        let c = match *self {
            Schedule::Constant => eta,
            Schedule::LinearRise { t0, t1 } => {
                let (t0, t1) = (t0 as f64, t1 as f64);
                if t < t0 {
                    0.0
                } else if t >= t1 {
                    eta
                } else {
                    eta * (t - t0) / (t1 - t0)
                }
            }
            Schedule::LinearDecay { steps } => {
                eta * (1.0 - (t / steps.max(1) as f64).clamp(0.0, 1.0))
            }
            Schedule::ExpDecay { rate } => eta * rate.powf(t),
            Schedule::LogisticRise { mid, k } => eta / (1.0 + (-k * (t - mid)).exp()),
            Schedule::Sine { period } => eta * (1.0 + (2.0 * PI * t / period).sin()) / 2.0,
            Schedule::External => eta * external as f64,
        };
        c as f32
    }

    /// Parse the CLI form: `const` | `rise:T0:T1` | `decay:T` | `exp:R` | `logistic:MID:K` |
    /// `sine:PERIOD`. [`Schedule::External`] has no text form: its values come per step from a
    /// host (automation lanes, a control file), so a command line that names it is rejected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let num = |i: usize| -> Result<f64, String> {
            let s = parts
                .get(i)
                .ok_or_else(|| format!("schedule `{text}` needs more values"))?;
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("schedule `{text}`: `{s}` is not a number"))
        };
        let steps = |i: usize| -> Result<usize, String> {
            let v = num(i)?;
            if v < 0.0 || v.fract() != 0.0 {
                return Err(format!(
                    "schedule `{text}`: `{}` is not a whole number of steps",
                    parts[i]
                ));
            }
            Ok(v as usize)
        };
        let arity = |n: usize| -> Result<(), String> {
            if parts.len() == n + 1 {
                Ok(())
            } else {
                Err(format!(
                    "schedule `{text}`: `{}` takes {n} value(s)",
                    parts[0]
                ))
            }
        };
        let schedule = match parts[0] {
            "const" => {
                arity(0)?;
                Schedule::Constant
            }
            "external" => {
                return Err(format!(
                    "schedule `{text}` takes its values per step from the plugin's automation or a \
                     stream's control file; on the command line use const, rise:T0:T1, decay:T, \
                     exp:R, logistic:MID:K or sine:PERIOD"
                ));
            }
            "rise" => {
                arity(2)?;
                let (t0, t1) = (steps(1)?, steps(2)?);
                if t1 <= t0 {
                    return Err(format!("schedule `{text}`: rise needs T0 < T1"));
                }
                Schedule::LinearRise { t0, t1 }
            }
            "decay" => {
                arity(1)?;
                let steps = steps(1)?;
                if steps == 0 {
                    return Err(format!("schedule `{text}`: decay needs T ≥ 1"));
                }
                Schedule::LinearDecay { steps }
            }
            "exp" => {
                arity(1)?;
                let rate = num(1)?;
                if !(rate > 0.0 && rate <= 1.0) {
                    return Err(format!("schedule `{text}`: exp needs 0 < R ≤ 1"));
                }
                Schedule::ExpDecay { rate }
            }
            "logistic" => {
                arity(2)?;
                Schedule::LogisticRise {
                    mid: num(1)?,
                    k: num(2)?,
                }
            }
            "sine" => {
                arity(1)?;
                let period = num(1)?;
                if period <= 0.0 {
                    return Err(format!("schedule `{text}`: sine needs a positive period"));
                }
                Schedule::Sine { period }
            }
            other => {
                return Err(format!(
                    "unknown schedule `{other}`: expected const, rise:T0:T1, decay:T, exp:R, logistic:MID:K or sine:PERIOD"
                ));
            }
        };
        Ok(schedule)
    }
}

/// A crossfade between two steers over the first `steps` steps (the paper's note crossfade):
/// A decays η→0 while B rises 0→η, so c_A(t) + c_B(t) = η throughout.
pub fn crossfade(steps: usize) -> (Schedule, Schedule) {
    let steps = steps.max(1);
    (
        Schedule::LinearDecay { steps },
        Schedule::LinearRise { t0: 0, t1: steps },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        let eta = 0.8f32;
        assert_eq!(Schedule::Constant.coefficient(eta, 123, 0.0), eta);
        let rise = Schedule::LinearRise { t0: 10, t1: 30 };
        assert_eq!(rise.coefficient(eta, 5, 0.0), 0.0);
        assert!((rise.coefficient(eta, 20, 0.0) - 0.4).abs() < 1e-6);
        assert_eq!(rise.coefficient(eta, 30, 0.0), eta);
        let decay = Schedule::LinearDecay { steps: 1500 };
        assert_eq!(decay.coefficient(eta, 0, 0.0), eta);
        assert!((decay.coefficient(eta, 750, 0.0) - 0.4).abs() < 1e-6);
        assert_eq!(decay.coefficient(eta, 2000, 0.0), 0.0);
        let exp = Schedule::ExpDecay { rate: 0.998 };
        assert!((exp.coefficient(1.0, 1500, 0.0) - 0.998f64.powi(1500) as f32).abs() < 1e-6);
        assert!(
            (exp.coefficient(1.0, 1500, 0.0) - 0.0496).abs() < 1e-3,
            "c(1500) ≈ 0.05 η"
        );
        let logistic = Schedule::LogisticRise {
            mid: 750.0,
            k: 10.0 / 1500.0,
        };
        assert!((logistic.coefficient(eta, 750, 0.0) - eta / 2.0).abs() < 1e-6);
        assert!(logistic.coefficient(eta, 0, 0.0) < 0.01 * eta);
        let sine = Schedule::Sine { period: 200.0 };
        assert!((sine.coefficient(eta, 0, 0.0) - eta / 2.0).abs() < 1e-6);
        assert!((sine.coefficient(eta, 50, 0.0) - eta).abs() < 1e-6);
        assert!(sine.coefficient(eta, 150, 0.0).abs() < 1e-6);
        assert_eq!(Schedule::External.coefficient(0.5, 7, 0.25), 0.125);
        let err = Schedule::parse("external").unwrap_err();
        assert!(err.contains("per step from the plugin"), "{err}");
    }

    #[test]
    fn crossfade_is_complementary() {
        let (a, b) = crossfade(1500);
        for t in [0, 1, 300, 750, 1499, 1500, 3000] {
            let sum = a.coefficient(1.0, t, 0.0) + b.coefficient(1.0, t, 0.0);
            assert!((sum - 1.0).abs() < 1e-6, "t = {t}: {sum}");
        }
    }

    #[test]
    fn parses_the_cli_forms() {
        assert_eq!(Schedule::parse("const"), Ok(Schedule::Constant));
        assert_eq!(
            Schedule::parse("rise:0:1500"),
            Ok(Schedule::LinearRise { t0: 0, t1: 1500 })
        );
        assert_eq!(
            Schedule::parse("decay:1500"),
            Ok(Schedule::LinearDecay { steps: 1500 })
        );
        assert_eq!(
            Schedule::parse("exp:0.998"),
            Ok(Schedule::ExpDecay { rate: 0.998 })
        );
        assert_eq!(
            Schedule::parse("logistic:750:0.01"),
            Ok(Schedule::LogisticRise {
                mid: 750.0,
                k: 0.01
            })
        );
        assert_eq!(
            Schedule::parse("sine:200"),
            Ok(Schedule::Sine { period: 200.0 })
        );
        for bad in [
            "rise:5:5",
            "decay:0",
            "exp:1.5",
            "sine:-3",
            "wobble",
            "rise:1",
            "decay:1.5",
            "exp:x",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
