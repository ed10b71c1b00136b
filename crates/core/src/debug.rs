//! `Debug` for handles that hold clients, databases or secrets: only the
//! fields that identify the handle are shown, so a log line never prints a
//! credential or a whole connection pool. Written once here because a dozen
//! types across the workspace want exactly that impl.

/// Implements `Debug` for `$ty` showing the named fields: `name` is
/// `self.name`, `name: a.b` is `self.a.b` shown as `name`. A trailing `..`
/// marks the rest as hidden (`finish_non_exhaustive`).
///
/// ```
/// struct Store { path: String, db: () }
/// trailhound_core::debug_fields!(Store { path, .. });
/// assert_eq!(format!("{:?}", Store { path: "p".into(), db: () }), r#"Store { path: "p", .. }"#);
/// ```
#[macro_export]
macro_rules! debug_fields {
    ($ty:ident { $($name:ident $(: $($path:ident).+)?),* $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($name), $crate::debug_fields!(@field self, $name $(: $($path).+)?)))*
                    .finish()
            }
        }
    };
    ($ty:ident { $($name:ident $(: $($path:ident).+)?,)* .. }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($name), $crate::debug_fields!(@field self, $name $(: $($path).+)?)))*
                    .finish_non_exhaustive()
            }
        }
    };
    (@field $s:ident, $name:ident) => { &$s.$name };
    (@field $s:ident, $name:ident : $($path:ident).+) => { &$s.$($path).+ };
}
