//! When central's agent listener accepts connections: it stops at the
//! configured maximum and listens again once under 95 % of it. The gap
//! keeps a process at its limit from flapping, and a process that stops
//! listening (instead of accepting and dropping) lets the others sharing
//! its port take every new connection.

/// The listener's state, decided from the connections held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenGate {
    max: usize,
    listening: bool,
}

impl ListenGate {
    /// A gate for at most `max` connections, listening.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            listening: true,
        }
    }

    /// Whether the listener should accept now.
    pub fn listening(&self) -> bool {
        self.listening
    }

    /// Below this many connections a stopped listener listens again.
    pub fn resume_below(&self) -> usize {
        self.max - self.max / 20
    }

    /// Takes the connections held now; returns the new state when it changes.
    pub fn update(&mut self, connections: usize) -> Option<bool> {
        let listening = if self.listening {
            connections < self.max
        } else {
            connections < self.resume_below()
        };
        (listening != self.listening).then(|| {
            self.listening = listening;
            listening
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ListenGate;

    #[test]
    fn it_stops_at_the_maximum_and_resumes_under_95_percent() {
        let mut gate = ListenGate::new(1000);
        assert_eq!(gate.update(999), None);
        assert_eq!(gate.update(1000), Some(false));
        assert_eq!(gate.update(960), None, "still over 95 %");
        assert_eq!(gate.update(950), None, "95 % exactly is not under");
        assert_eq!(gate.update(949), Some(true));
        assert!(gate.listening());
    }
}
