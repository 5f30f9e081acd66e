//! Which etcd member the client talks to. etcd-client balances every call over all the
//! endpoints, and a member that vanished without closing its connections (a partitioned or
//! crashed host) stays in that balance until HTTP/2 pings notice: 10 s and more, since etcd
//! refuses pings more often than every 5 s. Seen in the lab's partition drill: the other
//! agents' reads and watches kept going to the cut-off member for 4 to 6 s, and their own
//! leases nearly expired. tdsvip must notice within one call, so, like etcd's own clientv3,
//! it talks to one member at a time (the pinned one) and moves to the next as soon as a call
//! to it gets no answer or cannot reach it; a watch opened on a member ends when the pin
//! moves (see `AgWatch::next`), since a member cut off without a word also sends no events.

use etcd_client::{Client, ConnectOptions};
use tokio::sync::{OnceCell, watch};

/// One etcd-client per member, each connected on first use (a member that is down at start
/// is tried again when the pin comes to it).
pub(crate) struct Members {
    urls: Vec<String>,
    options: ConnectOptions,
    clients: Vec<OnceCell<Client>>,
    pinned: watch::Sender<usize>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("urls", &self.urls)
            .field("pinned", &*self.pinned.borrow())
            .finish_non_exhaustive()
    }
}

impl Members {
    pub(crate) fn new(urls: &[String], options: ConnectOptions) -> Members {
        Members {
            urls: urls.to_vec(),
            options,
            clients: urls.iter().map(|_| OnceCell::new()).collect(),
            pinned: watch::Sender::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    /// The member calls go to now.
    pub(crate) fn pinned(&self) -> usize {
        *self.pinned.borrow()
    }

    /// A receiver that sees every move of the pin (a watch ends on it).
    pub(crate) fn moves(&self) -> watch::Receiver<usize> {
        self.pinned.subscribe()
    }

    pub(crate) fn url(&self, index: usize) -> &str {
        &self.urls[index]
    }

    /// Member `index`'s client, connecting it first if it never was (with a user set, the
    /// connection authenticates: a round trip).
    pub(crate) async fn client(&self, index: usize) -> Result<Client, etcd_client::Error> {
        let cell = &self.clients[index];
        let client = cell
            .get_or_try_init(|| Client::connect([&self.urls[index]], Some(self.options.clone())))
            .await?;
        Ok(client.clone())
    }

    /// Pins `index` (the first member that answered at connect).
    pub(crate) fn pin(&self, index: usize) {
        self.pinned.send_if_modified(|p| {
            let moved = *p != index;
            *p = index;
            moved
        });
    }

    /// A call to member `index` got no answer or could not reach it: move to the next one,
    /// unless another call already moved the pin away from it (then nothing changes, so two
    /// failures of one member move the pin once).
    pub(crate) fn failed(&self, index: usize) {
        let next = (index + 1) % self.urls.len();
        self.pinned.send_if_modified(|p| {
            let moved = *p == index && next != index;
            if moved {
                *p = next;
            }
            moved
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Members {
        let urls: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{i}:2379")).collect();
        Members::new(&urls, ConnectOptions::new())
    }

    #[test]
    fn a_failure_moves_the_pin_to_the_next_member_and_around() {
        let m = members(3);
        assert_eq!(m.pinned(), 0);
        m.failed(0);
        assert_eq!(m.pinned(), 1);
        m.failed(1);
        m.failed(2);
        assert_eq!(m.pinned(), 0, "after the last member comes the first");
    }

    #[test]
    fn a_late_failure_of_a_member_already_left_does_not_move_the_pin_again() {
        let m = members(3);
        let mut moves = m.moves();
        m.failed(0);
        m.failed(0);
        assert_eq!(m.pinned(), 1);
        assert!(moves.has_changed().unwrap());
        moves.mark_unchanged();
        m.failed(2);
        assert!(!moves.has_changed().unwrap(), "member 2 was not pinned");
    }

    #[test]
    fn one_member_stays_pinned() {
        let m = members(1);
        let moves = m.moves();
        m.failed(0);
        assert_eq!(m.pinned(), 0);
        assert!(!moves.has_changed().unwrap());
    }
}
