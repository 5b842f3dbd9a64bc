//! The one table, as the migrations in `migrations/<backend>/` leave it.
//! Kept by hand: `diesel print-schema` would need the diesel CLI installed.

diesel::table! {
    /// Deletion requests: one row per video id until its files are gone.
    video_del_rec (id) {
        id -> Varchar,
        state -> Varchar,
        attempts -> Integer,
        created_at -> BigInt,
        not_before -> Nullable<BigInt>,
        locked_by -> Nullable<Varchar>,
        locked_until -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
    }
}
