"""The home planner: one OR-Tools model of the next hours, a builder per device kind."""
