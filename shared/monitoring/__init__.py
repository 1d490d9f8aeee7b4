"""What the deployment records about itself: every answer (the prediction log), the labels the
reading room confirms, a shadow version's answers beside the active one's, and who changed
what (the audit trail). The stores sit beside the job store: Redis where the broker is Redis,
SQLite files in CXR_STATE_DIR otherwise."""
