//! Capped exponential backoff with jitter: how long a camera and the broker connection
//! wait between attempts. Each wait is the current step ±20 %, so a fleet of devices (or
//! the cameras behind one switch) never retries in lock-step; the step doubles up to a cap
//! and starts over once an attempt succeeds.

use std::time::{Duration, SystemTime};

/// The waits between attempts of one thing that can fail.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    /// Mixed into the jitter with the attempt number, so two instances started together
    /// still draw different waits.
    salt: u64,
    attempts: u64,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration, salt: u64) -> Backoff {
        Backoff { initial, max: max.max(initial), step: initial, salt, attempts: 0 }
    }

    /// The wait before the next attempt: the current step with jitter. The step then
    /// doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        self.attempts += 1;
        let delay = jitter(self.step, self.salt ^ self.attempts.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// The step the next wait is drawn from (for logs).
    pub fn step(&self) -> Duration {
        self.step
    }

    /// After a success: the next failure waits the initial step again.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }

    /// After a failure that retrying soon cannot cure (bad credentials): wait the longest.
    pub fn to_max(&mut self) {
        self.step = self.max;
    }
}

/// `d` ±20 %, drawn from the clock's nanoseconds and `salt`.
fn jitter(d: Duration, salt: u64) -> Duration {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |t| u64::from(t.subsec_nanos()));
    let r = (nanos ^ salt) % 1000;
    d.mul_f64(0.8 + 0.4 * r as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_start_over_after_a_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350), 7);
        let mut steps = Vec::new();
        for _ in 0..5 {
            let step = b.step();
            let wait = b.next_delay();
            assert!(wait >= step.mul_f64(0.8) && wait <= step.mul_f64(1.2), "{wait:?} is not {step:?} ±20 %");
            steps.push(step);
        }
        assert_eq!(steps, [ms(100), ms(200), ms(350), ms(350), ms(350)]);
        b.reset();
        assert_eq!(b.step(), ms(100));
        b.to_max();
        assert_eq!(b.step(), ms(350));
        assert_eq!(Backoff::new(ms(500), ms(100), 0).step(), ms(500), "a cap below the start is the start");
    }
}
