"""The 5-user, 6-item toy dataset shared by the data and CLI tests: items 0 and 3 share their
identifier (a collision), item 5 has a third level."""

SEQUENCES = {
    "0": [0, 1, 2, 3],
    "1": [1, 2, 3, 4, 5],
    "2": [5, 4, 3],
    "3": [0, 2, 4, 1, 3, 5],
    "4": [2, 3, 0],
}
INDEX = {
    "0": ["<a_1>", "<b_2>"],
    "1": ["<a_3>", "<b_4>"],
    "2": ["<a_2>", "<b_1>"],
    "3": ["<a_1>", "<b_2>"],
    "4": ["<a_10>", "<b_1>"],
    "5": ["<a_3>", "<b_1>", "<c_0>"],
}
