"""When migrations start: a batch's turns, the dispatcher and the schedule."""
