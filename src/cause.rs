//! The underlying error of a failure, kept so that [`Error::source`] can return it.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The error underneath one of this crate's errors (an I/O error, a URL that does not parse, an
/// HTTP client's error...), returned by that error's [`source`](Error::source).
///
/// It is shared, so the errors holding it stay `Clone`; two are equal when their messages are
/// (the underlying errors themselves usually cannot be compared). It is transparent in a
/// `source()` chain: its `Display` and `source()` are those of the error it holds, which
/// [`get_ref`](Self::get_ref) returns for a downcast. It never holds an API key: the crate only
/// wraps errors whose text cannot contain one, and drops a cause whose text would.
///
/// ```
/// use std::error::Error;
/// use fabraix_scheduler::Cause;
///
/// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
/// let cause = Cause::new(io);
/// assert_eq!(cause.to_string(), "no such file");
/// let held = cause.get_ref().downcast_ref::<std::io::Error>().unwrap();
/// assert_eq!(held.kind(), std::io::ErrorKind::NotFound);
/// assert!(cause.source().is_none());
/// ```
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    /// Holds `error`.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// Holds a boxed error (a `Box<dyn Error>` is not itself an `Error`).
    #[cfg(feature = "tower")]
    pub(crate) fn from_boxed(error: Box<dyn Error + Send + Sync + 'static>) -> Self {
        Cause(Arc::from(error))
    }

    /// The error held, for a [`downcast_ref`](trait@Error#method.downcast_ref).
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_is_transparent_in_the_chain() {
        let cause = Cause::new(Outer(std::io::Error::other("inner")));
        assert_eq!(cause.to_string(), "outer");
        assert_eq!(cause.source().unwrap().to_string(), "inner");
        assert!(cause.get_ref().downcast_ref::<Outer>().is_some());
    }

    #[test]
    fn causes_compare_by_message() {
        let a = Cause::new(std::io::Error::other("x"));
        assert_eq!(a, a.clone());
        assert_eq!(a, Cause::new(std::io::Error::other("x")));
        assert_ne!(a, Cause::new(std::io::Error::other("y")));
    }
}
