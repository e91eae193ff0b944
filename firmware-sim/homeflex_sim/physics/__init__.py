"""Household physics: loads, weather and the meter, all advanced on one simulated clock.

Each device's quantities are plain attributes named like its template's registers (`power_w`,
`soc_pct`, …); a writable register `x` is set through the device's `set_x(value)`, which raises
`ValueError` for a value the device refuses.
"""
