//! The one range check of the manifest: every numeric field is read by [`Context::number`],
//! so a value out of range always reads `<value> is out of range; allowed: <min> to <max>`
//! (or `allowed: 0 (<meaning>) or <min> to <max>` where 0 means something of its own), and
//! the error names the file, the line and column of the value, and the dotted field.

use std::fmt;

use crate::error::Result;

use super::context::{At, Context, Problem, Seg, invalid};

/// The values a numeric field allows: `min` to `max`, both included, and optionally 0 with a
/// meaning of its own ("never", "no checks") below a larger `min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Allowed<T> {
    min: T,
    max: T,
    zero: Option<&'static str>,
}

impl<T> Allowed<T> {
    /// `min` to `max`, both included.
    pub(super) const fn new(min: T, max: T) -> Allowed<T> {
        Allowed { min, max, zero: None }
    }

    /// 0, which means `meaning`, or `min` to `max`, both included.
    pub(super) const fn zero_or(meaning: &'static str, min: T, max: T) -> Allowed<T> {
        Allowed { min, max, zero: Some(meaning) }
    }
}

impl<T: fmt::Display> fmt::Display for Allowed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(meaning) = self.zero {
            write!(f, "0 ({meaning}) or ")?;
        }
        write!(f, "{} to {}", self.min, self.max)
    }
}

/// `value` as a `T` if `allowed` admits it; otherwise the problem every range error states.
pub(super) fn in_range<T>(value: i64, allowed: &Allowed<T>) -> Result<T, Problem>
where
    T: Copy + PartialOrd + TryFrom<i64> + fmt::Display,
{
    T::try_from(value)
        .ok()
        .filter(|number| {
            (allowed.min..=allowed.max).contains(number) || (value == 0 && allowed.zero.is_some())
        })
        .ok_or_else(|| invalid(format!("{value} is out of range; allowed: {allowed}")))
}

impl Context<'_> {
    /// The numeric field at `field`: `None` when it is unset, else `value` if `allowed`
    /// admits it.
    ///
    /// # Errors
    /// `invalid_argument` naming the file, the value's line and column, and `field`, with the
    /// message of [`in_range`].
    pub(super) fn number<T>(
        &self,
        field: &[Seg<'_>],
        value: Option<i64>,
        allowed: Allowed<T>,
    ) -> Result<Option<T>>
    where
        T: Copy + PartialOrd + TryFrom<i64> + fmt::Display,
    {
        value.map(|value| self.check(field, At::Value, in_range(value, &allowed))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use toml::de::DeTable;

    use super::{Allowed, in_range};
    use crate::error::Code;
    use crate::manifest::context::{Context, Seg};

    #[test]
    fn both_bounds_are_included_and_their_neighbours_refused() {
        let allowed = Allowed::<u32>::new(1, 100);
        assert_eq!(in_range(1, &allowed), Ok(1));
        assert_eq!(in_range(100, &allowed), Ok(100));
        for refused in [0, 101, -1, i64::MIN, i64::MAX] {
            let (code, message) = in_range(refused, &allowed).unwrap_err();
            assert_eq!(code, Code::InvalidArgument);
            assert_eq!(message, format!("{refused} is out of range; allowed: 1 to 100"));
        }
    }

    #[test]
    fn the_whole_type_can_be_allowed() {
        let allowed = Allowed::new(0, u32::MAX);
        assert_eq!(in_range(0, &allowed), Ok(0));
        assert_eq!(in_range(i64::from(u32::MAX), &allowed), Ok(u32::MAX));
        let (_, message) = in_range(i64::from(u32::MAX) + 1, &allowed).unwrap_err();
        assert_eq!(message, "4294967296 is out of range; allowed: 0 to 4294967295");
        assert!(in_range(-1, &Allowed::new(0, u64::MAX)).is_err());
    }

    #[test]
    fn zero_with_a_meaning_is_allowed_below_the_minimum() {
        let allowed = Allowed::<u64>::zero_or("never", 100, 1000);
        assert_eq!(in_range(0, &allowed), Ok(0));
        assert_eq!(in_range(100, &allowed), Ok(100));
        assert_eq!(in_range(1000, &allowed), Ok(1000));
        for refused in [1, 99, 1001, -1] {
            let (_, message) = in_range(refused, &allowed).unwrap_err();
            assert_eq!(message, format!("{refused} is out of range; allowed: 0 (never) or 100 to 1000"));
        }
        assert!(in_range(0, &Allowed::<u64>::new(1, 10)).is_err(), "0 is refused unless it has a meaning");
    }

    #[test]
    fn a_range_error_names_the_file_the_position_and_the_field() {
        let text = "[plugin]\nid = \"x\"\n[limits]\npids = 0\n";
        let doc = DeTable::parse(text).unwrap();
        let path = Path::new("plugins/x/plugin.toml");
        let cx = Context { path, text, doc: doc.get_ref(), plugin: Some("x".to_owned()) };
        let field = [Seg::Key("limits"), Seg::Key("pids")];
        assert_eq!(cx.number(&field, None, Allowed::<u32>::new(1, 10)).unwrap(), None);
        assert_eq!(cx.number(&field, Some(10), Allowed::<u32>::new(1, 10)).unwrap(), Some(10));
        let error = cx.number(&field, Some(0), Allowed::<u32>::new(1, 10)).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(error.file(), Some(path));
        assert_eq!(error.field(), Some("limits.pids"));
        assert_eq!(error.position(), Some((4, 8)));
        assert_eq!(
            error.to_string(),
            "invalid_argument: plugin x: plugins/x/plugin.toml:4:8: field limits.pids: \
             0 is out of range; allowed: 1 to 10"
        );
    }
}
