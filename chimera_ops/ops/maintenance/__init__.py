"""`chimera-ops maintenance weekly|monthly`: the operators' checklist as checks (one small class
each), their history in the store, and the cron/systemd schedule that runs them."""
