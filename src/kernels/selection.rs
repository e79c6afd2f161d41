//! Which kernels the layers may use: the fused ones where they apply (the default), or only the generic candle
//! ops that every non-CPU device runs, forced with `ALTCLIP_KERNELS=generic` so that the CPU proves that math.

use crate::error::{Error, Result};

/// The environment variable that picks the kernels: `generic` forces the generic path; `fused`, empty or unset lets
/// each fused kernel run where it applies; anything else is an error at the first forward.
pub(crate) const VAR: &str = "ALTCLIP_KERNELS";

/// The kernels the layers may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// Each fused kernel where its `try_…` accepts the inputs, the generic path elsewhere.
    Fused,
    /// The generic candle ops only: every `try_…` declines.
    Generic,
}

/// The value of [`VAR`], `None` when unset.
fn parse(value: Option<&std::ffi::OsStr>) -> std::result::Result<Kernels, String> {
    match value.map(|v| v.to_str()) {
        None | Some(Some("" | "fused")) => Ok(Kernels::Fused),
        Some(Some("generic")) => Ok(Kernels::Generic),
        Some(Some(other)) => Err(format!("expected `generic` or `fused`, got {other:?}")),
        Some(None) => Err("expected `generic` or `fused`, got a value that is not UTF-8".into()),
    }
}

/// [`VAR`] as the process started with it, read once (the choice must not change between layers of one forward).
fn from_env() -> Result<Kernels> {
    static CHOICE: std::sync::OnceLock<std::result::Result<Kernels, String>> = std::sync::OnceLock::new();
    CHOICE
        .get_or_init(|| parse(std::env::var_os(VAR).as_deref()))
        .clone()
        .map_err(|reason| Error::InvalidArgument { argument: VAR, reason })
}

/// The kernels in force, asked by every `try_…` before anything else. The crate's unit tests don't read the
/// environment: each test thread starts on [`Kernels::Fused`] and `testing::with_kernels` switches it.
pub(crate) fn selected() -> Result<Kernels> {
    #[cfg(test)]
    {
        Ok(testing::FORCED.with(std::cell::Cell::get))
    }
    #[cfg(not(test))]
    {
        from_env()
    }
}

/// The unit tests' switch. Per thread, because the tests run in parallel; the choice is made on the calling thread
/// (rayon's workers only run the kernel that was chosen).
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::Cell;

    use super::Kernels;

    thread_local! {
        pub(super) static FORCED: Cell<Kernels> = const { Cell::new(Kernels::Fused) };
    }

    /// Runs `f` with `kernels` in force on this thread, then restores the previous choice (also if `f` panics).
    pub(crate) fn with_kernels<R>(kernels: Kernels, f: impl FnOnce() -> R) -> R {
        struct Restore(Kernels);
        impl Drop for Restore {
            fn drop(&mut self) {
                FORCED.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(FORCED.with(|c| c.replace(kernels)));
        f()
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn the_variable_takes_generic_or_fused_and_names_anything_else() {
        assert_eq!(parse(None), Ok(Kernels::Fused));
        assert_eq!(parse(Some(OsStr::new("fused"))), Ok(Kernels::Fused));
        assert_eq!(parse(Some(OsStr::new(""))), Ok(Kernels::Fused), "empty is unset");
        assert_eq!(parse(Some(OsStr::new("generic"))), Ok(Kernels::Generic));
        for bad in ["Generic", "cuda", " generic"] {
            let err = parse(Some(OsStr::new(bad))).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn the_environment_is_read_once_into_a_typed_choice() {
        let want = parse(std::env::var_os(VAR).as_deref());
        match (from_env(), want) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(Error::InvalidArgument { argument, reason }), Err(r)) => assert_eq!((argument, reason), (VAR, r)),
            (got, want) => panic!("{got:?} vs {want:?}"),
        }
        assert_eq!(from_env().ok(), from_env().ok());
    }

    #[test]
    fn with_kernels_switches_this_thread_only_and_restores() {
        assert_eq!(selected().unwrap(), Kernels::Fused);
        testing::with_kernels(Kernels::Generic, || {
            assert_eq!(selected().unwrap(), Kernels::Generic);
            let other = std::thread::spawn(|| selected().unwrap()).join().unwrap();
            assert_eq!(other, Kernels::Fused, "another thread");
        });
        assert_eq!(selected().unwrap(), Kernels::Fused);
    }
}
