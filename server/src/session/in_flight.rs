//! The requests a session has started and not answered yet (durable writes, properties, events,
//! syncs), answered in the order they arrived whatever order they finish in.
//!
//! A plain queue rather than `FuturesOrdered`: it allocates nothing while empty, which is what an
//! idle session holds, and it never holds more than [`super::MAX_IN_FLIGHT`] entries.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::Poll;

type Waiting<T> = Pin<Box<dyn Future<Output = T> + Send>>;

enum Entry<T> {
    Waiting(Waiting<T>),
    Done(T),
}

/// Requests in arrival order; each yields a `T` for the session to answer with.
pub struct InFlight<T> {
    entries: VecDeque<Entry<T>>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            entries: VecDeque::new(),
        }
    }
}

impl<T> InFlight<T> {
    /// Queues a request behind the others.
    pub fn push(&mut self, request: impl Future<Output = T> + Send + 'static) {
        self.entries.push_back(Entry::Waiting(Box::pin(request)));
    }

    /// How many requests are unanswered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every request is answered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Waits until the oldest request is done (then take the answers with
    /// [`InFlight::pop_done`]). Cancel-safe: finished requests keep their output. Never ready
    /// while empty.
    pub fn oldest_done(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            // Every waiting request is polled so that each registers its wake-up; at most
            // MAX_IN_FLIGHT of them, and each poll is a cheap check.
            for entry in &mut self.entries {
                if let Entry::Waiting(request) = entry
                    && let Poll::Ready(output) = request.as_mut().poll(cx)
                {
                    *entry = Entry::Done(output);
                }
            }
            match self.entries.front() {
                Some(Entry::Done(_)) => Poll::Ready(()),
                _ => Poll::Pending,
            }
        })
    }

    /// The oldest request's output if it is done, in arrival order; frees the queue's memory
    /// once it is empty.
    pub fn pop_done(&mut self) -> Option<T> {
        if !matches!(self.entries.front(), Some(Entry::Done(_))) {
            return None;
        }
        let done = match self.entries.pop_front() {
            Some(Entry::Done(output)) => Some(output),
            _ => None,
        };
        if self.entries.is_empty() {
            self.entries = VecDeque::new();
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_come_in_arrival_order_whatever_order_they_finish_in() {
        let (first_done, first) = tokio::sync::oneshot::channel::<u32>();
        let (second_done, second) = tokio::sync::oneshot::channel::<u32>();
        let mut in_flight = InFlight::default();
        in_flight.push(async move { first.await.unwrap_or(0) });
        in_flight.push(async move { second.await.unwrap_or(0) });
        second_done.send(2).unwrap();
        let poll_once = |in_flight: &mut InFlight<u32>| {
            let mut waiting = std::pin::pin!(in_flight.oldest_done());
            let waker = std::task::Waker::noop();
            waiting
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
                .is_ready()
        };
        assert!(!poll_once(&mut in_flight));
        assert_eq!(in_flight.pop_done(), None);
        first_done.send(1).unwrap();
        in_flight.oldest_done().await;
        assert_eq!(in_flight.pop_done(), Some(1));
        assert_eq!(in_flight.pop_done(), Some(2));
        assert!(in_flight.is_empty());
        assert_eq!(in_flight.entries.capacity(), 0);
    }
}
