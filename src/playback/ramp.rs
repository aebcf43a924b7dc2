//! Read-ahead that opens as its consumer takes items.

use futures::stream::{FuturesOrdered, Stream, StreamExt};

/// Futures run ahead of their consumer, yielded in order: as many at once
/// as items have been taken (at least one, at most `most`). Like
/// `buffered(most)`, but a consumer that stops early leaves little
/// started work behind.
pub(crate) struct Ramp<I>
where
    I: Iterator,
    I::Item: Future,
{
    source: I,
    running: FuturesOrdered<I::Item>,
    taken: usize,
    most: usize,
}

impl<I> Ramp<I>
where
    I: Iterator,
    I::Item: Future,
{
    pub(crate) fn new(source: I, most: usize) -> Self {
        Self {
            source,
            running: FuturesOrdered::new(),
            taken: 0,
            most: most.max(1),
        }
    }
}

impl<I> Stream for Ramp<I>
where
    I: Iterator + Unpin,
    I::Item: Future,
{
    type Item = <I::Item as Future>::Output;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        let window = this.taken.clamp(1, this.most);
        while this.running.len() < window {
            match this.source.next() {
                Some(fut) => this.running.push_back(fut),
                None => break,
            }
        }
        let item = std::task::ready!(this.running.poll_next_unpin(cx));
        if item.is_some() {
            this.taken += 1;
        }
        std::task::Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::StreamExt;

    use super::Ramp;

    /// Futures that count when the ramp takes them from their source (a
    /// chunk's read is created then, and runs from the next poll on).
    fn counted(
        n: usize,
        started: &Arc<AtomicUsize>,
    ) -> impl Iterator<Item = impl Future<Output = usize>> + Unpin {
        let started = started.clone();
        (0..n).map(move |i| {
            started.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                i
            }
        })
    }

    #[tokio::test]
    async fn the_window_opens_one_per_item_taken_up_to_its_most() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut ramp = Ramp::new(counted(20, &started), 4);
        let mut seen = Vec::new();
        // Started (cumulative) once item k has been taken: the window
        // before taking it was clamp(k, 1, 4).
        let mut expected_started = 0;
        for k in 0..20 {
            let window = k.clamp(1, 4);
            expected_started = (k + window).max(expected_started).min(20);
            seen.push(ramp.next().await.unwrap());
            assert_eq!(
                started.load(Ordering::SeqCst),
                expected_started,
                "after item {k}"
            );
        }
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        assert!(ramp.next().await.is_none());
    }

    #[tokio::test]
    async fn a_consumer_that_stops_after_the_first_item_left_one_started() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut ramp = Ramp::new(counted(100, &started), 4);
        assert_eq!(ramp.next().await, Some(0));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // The consumer asks once more (a player's second message), then
        // drops the stream: one chunk ahead was started, not four.
        assert_eq!(ramp.next().await, Some(1));
        drop(ramp);
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }
}
