//! `AGRA_PROFILE=1`: where a pack's training time goes (steps, test evaluation and read-back,
//! the next epoch's plan, checkpoint rounds), one JSON line per pack on stderr. On CUDA each
//! phase ends with a device synchronisation, so the phases add up to the wall clock; that
//! changes the overlap it measures, which is why it is off unless asked for.

use serde::Serialize;
use std::time::Instant;
use tch::Device;

#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Steps,
    Evaluation,
    Plan,
    Checkpoint,
}

#[derive(Debug, Default, Serialize)]
struct Seconds {
    steps: f64,
    evaluation: f64,
    plan: f64,
    checkpoint: f64,
}

pub struct Profile {
    device: Device,
    last: Instant,
    seconds: Option<Seconds>,
}

impl Profile {
    pub fn from_env(device: Device) -> Profile {
        let on = std::env::var("AGRA_PROFILE").is_ok_and(|v| v == "1");
        Profile { device, last: Instant::now(), seconds: on.then(Seconds::default) }
    }

    /// Ends the current phase: the time since the last call goes to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        let Some(seconds) = self.seconds.as_mut() else { return };
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
        let elapsed = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        *match phase {
            Phase::Steps => &mut seconds.steps,
            Phase::Evaluation => &mut seconds.evaluation,
            Phase::Plan => &mut seconds.plan,
            Phase::Checkpoint => &mut seconds.checkpoint,
        } += elapsed;
    }

    pub fn report(&self, members: &[usize], epochs: usize) {
        if let Some(seconds) = &self.seconds {
            let line = serde_json::json!({
                "profile": { "device": format!("{:?}", self.device), "members": members, "epochs": epochs, "seconds": seconds }
            });
            crate::progress::tell(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_by_phase_and_nothing_is_kept_when_off() {
        let mut on = Profile { device: Device::Cpu, last: Instant::now(), seconds: Some(Seconds::default()) };
        std::thread::sleep(std::time::Duration::from_millis(20));
        on.lap(Phase::Steps);
        on.lap(Phase::Checkpoint);
        let s = on.seconds.as_ref().unwrap();
        assert!(s.steps >= 0.02 && s.checkpoint < s.steps && s.evaluation == 0.0, "{s:?}");
        let mut off = Profile { device: Device::Cpu, last: Instant::now(), seconds: None };
        off.lap(Phase::Steps);
        assert!(off.seconds.is_none());
    }
}
