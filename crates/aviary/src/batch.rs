//! [`Batch`]: packets handed over together, in order, with the common case of one packet
//! held inline. Most hand-overs carry one packet (a device's PUBLISH from one read, an
//! acknowledgement to a publisher, a delivery to a subscriber that keeps up), and then no
//! `Vec` is allocated; a second packet moves them into one.
//!
//! Used for the packets of one read on their way to the broker task
//! (`crate::broker_task::Event::Packets`, filled by `crate::connection`'s reader) and for a
//! connection's outbound queue (`crate::outbox`).

/// Items in order: none, one inline, or several in a `Vec`.
#[derive(Debug, Default)]
pub(crate) enum Batch<T> {
    #[default]
    Empty,
    One(T),
    Many(Vec<T>),
}

impl<T> Batch<T> {
    /// Items in the batch.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(_) => 1,
            Self::Many(items) => items.len(),
        }
    }

    /// Whether the batch has no item.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `item` after the others; `capacity`: how many the `Vec` is sized for when the
    /// batch outgrows one item (it grows beyond if needed).
    #[inline]
    pub(crate) fn push(&mut self, item: T, capacity: impl FnOnce() -> usize) {
        match self {
            Self::Empty => *self = Self::One(item),
            Self::Many(items) => items.push(item),
            Self::One(_) => {
                let Self::One(first) = std::mem::take(self) else {
                    unreachable!("matched just above")
                };
                let mut items = Vec::with_capacity(capacity().max(2));
                items.push(first);
                items.push(item);
                *self = Self::Many(items);
            }
        }
    }

    /// Calls `f` with each item, in order, by reference.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&T)) {
        match self {
            Self::Empty => {}
            Self::One(item) => f(item),
            Self::Many(items) => items.iter().for_each(f),
        }
    }
}

impl<T> From<Vec<T>> for Batch<T> {
    fn from(items: Vec<T>) -> Self {
        Self::Many(items)
    }
}

/// A [`Batch`]'s items, in order.
#[derive(Debug)]
pub(crate) enum BatchIter<T> {
    One(Option<T>),
    Many(std::vec::IntoIter<T>),
}

impl<T> Iterator for BatchIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            Self::One(item) => item.take(),
            Self::Many(items) => items.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Self::One(item) => usize::from(item.is_some()),
            Self::Many(items) => items.len(),
        };
        (n, Some(n))
    }
}

impl<T> ExactSizeIterator for BatchIter<T> {}

impl<T> IntoIterator for Batch<T> {
    type Item = T;
    type IntoIter = BatchIter<T>;

    fn into_iter(self) -> BatchIter<T> {
        match self {
            Self::Empty => BatchIter::One(None),
            Self::One(item) => BatchIter::One(Some(item)),
            Self::Many(items) => BatchIter::Many(items.into_iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_the_order_they_went_in() {
        for n in [0usize, 1, 2, 3, 8, 9, 100] {
            let mut batch = Batch::default();
            for i in 0..n {
                batch.push(i, || 8);
            }
            assert_eq!(batch.len(), n);
            assert_eq!(batch.is_empty(), n == 0);
            match (&batch, n) {
                (Batch::Empty, 0) | (Batch::One(_), 1) => {}
                (Batch::Many(items), _) if n >= 2 => assert!(items.capacity() >= n.min(8)),
                (other, _) => panic!("{n} items held as {other:?}"),
            }
            let mut seen = Vec::new();
            batch.for_each(|i| seen.push(*i));
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
            let mut iter = batch.into_iter();
            assert_eq!(iter.len(), n);
            if n > 0 {
                iter.next();
                assert_eq!(iter.len(), n - 1);
            }
            assert_eq!(iter.collect::<Vec<_>>(), (1.min(n)..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_second_item_sizes_the_vec_once() {
        let mut batch = Batch::default();
        batch.push('a', || unreachable!("one item is held inline"));
        batch.push('b', || 32);
        batch.push('c', || unreachable!("sized only once"));
        assert!(matches!(&batch, Batch::Many(items) if items.capacity() == 32));
        let mut small = Batch::default();
        small.push('a', || 0);
        small.push('b', || 0);
        assert!(matches!(&small, Batch::Many(items) if items.capacity() >= 2));
    }
}
