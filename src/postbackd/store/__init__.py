"""The durable state behind one interface (`base.Store`): the embedded SQLite store in the
data directory (`embedded`), or the store that `database_url` names (`factory`)."""
