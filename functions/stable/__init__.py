"""The study-stable function (StudyStable after a quiet time: SQS delay messages as timers)."""
