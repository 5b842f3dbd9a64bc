//! The tables, as the migrations in `migrations/<backend>/` leave them.
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
        source -> Varchar,
        request_id -> Nullable<Varchar>,
        paths -> Nullable<Text>,
        claims -> Integer,
        /// 0 normal, 1 urgent (`models::Priority`).
        priority -> SmallInt,
    }
}

diesel::table! {
    /// Receipts of completed requests, one per id, kept for the retention.
    video_del_receipt (id) {
        id -> Varchar,
        requested_at -> BigInt,
        completed_at -> BigInt,
        attempts -> Integer,
        deleted -> Integer,
        missing -> Integer,
        acked_by -> Varchar,
        source -> Varchar,
        request_id -> Nullable<Varchar>,
        completions -> Integer,
        targets -> Nullable<Text>,
        claims -> Integer,
    }
}

diesel::table! {
    /// Switches shared by every instance: `paused`, and the `pruner` lease.
    video_del_control (name) {
        name -> Varchar,
        value -> BigInt,
        locked_by -> Nullable<Varchar>,
        locked_until -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// Counts kept by the transactions that change them, in 16 shards.
    video_del_counts (shard) {
        shard -> Integer,
        queued -> BigInt,
        failed -> BigInt,
        done -> BigInt,
    }
}

diesel::table! {
    /// The outbox: one row per sink and event of a request's end, kept
    /// until delivered and then for the receipts' retention.
    video_del_event (id) {
        id -> BigInt,
        sink -> Varchar,
        kind -> Varchar,
        subject -> Varchar,
        occurred_at -> BigInt,
        data -> Text,
        state -> Varchar,
        tries -> Integer,
        not_before -> BigInt,
        locked_by -> Nullable<Varchar>,
        locked_until -> Nullable<BigInt>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        delivered_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The ack's side of the outbox: one row per group of an ack's removed
    /// rows, until the notifier turns it into events (`video_del_event`).
    video_del_announce (id) {
        id -> BigInt,
        occurred_at -> BigInt,
        acked_by -> Varchar,
        deleted -> Integer,
        missing -> Integer,
        targets -> Text,
        size -> Integer,
        items -> Text,
    }
}
