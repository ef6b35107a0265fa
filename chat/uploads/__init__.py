"""Files people send: upload, real-type checks, storage, extraction (in the task
queue's workers), serving, and what a prompt makes of them."""
