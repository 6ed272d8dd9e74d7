"""A fixed set of 200 varied English sentences: ten domains, each pairing five subjects with four predicates."""

DOMAINS = {
    "finance": (["The central bank", "A small investor", "The pension fund", "Our accountant", "The startup"],
                ["raised its forecast for next year.", "lost money on risky bonds.",
                 "moved its savings into index funds.", "is worried about rising inflation."]),
    "sports": (["The home team", "A young goalkeeper", "The marathon runner", "Our coach", "The tennis champion"],
               ["won the final after extra time.", "trained in the rain all morning.",
                "was injured during the second half.", "celebrated with the fans."]),
    "cooking": (["My grandmother", "The pastry chef", "A hungry student", "The food critic", "Our neighbour"],
                ["baked fresh bread with rosemary.", "burned the onions again.",
                 "prefers soup with extra garlic.", "tasted the new curry recipe."]),
    "technology": (["The new laptop", "An old server", "The mobile app", "Our database", "The web browser"],
                   ["crashed after the latest update.", "runs twice as fast with more memory.",
                    "needs a security patch.", "stores every file in the cloud."]),
    "travel": (["The night train", "A tired tourist", "The cheap airline", "Our tour guide", "The cruise ship"],
               ["arrived in Lisbon two hours late.", "lost a suitcase at the airport.",
                "offers free tickets to children.", "stopped at every small village."]),
    "science": (["The telescope", "A graduate student", "The research lab", "Our physics teacher",
                 "The chemist"],
                ["measured the speed of light again.", "discovered a new species of beetle.",
                 "published results on quantum entanglement.", "repeated the experiment three times."]),
    "health": (["The family doctor", "A nurse on night shift", "The hospital", "Our pharmacist",
                "The patient"],
               ["recommends walking thirty minutes a day.", "ran out of flu vaccines.",
                "explained the side effects carefully.", "recovered quickly after surgery."]),
    "weather": (["The storm", "A cold wind", "The heat wave", "Heavy snow", "The morning fog"],
                ["closed the mountain roads.", "blew across the empty beach.",
                 "lasted for almost two weeks.", "delayed flights all over the country."]),
    "arts": (["The orchestra", "A street painter", "The museum", "Our drama club", "The novelist"],
             ["performed a symphony by Brahms.", "sold a portrait of the old harbour.",
              "opened an exhibition of modern sculpture.", "rehearsed the play until midnight."]),
    "home": (["The cat", "A noisy neighbour", "The washing machine", "Our garden", "The toddler"],
             ["slept on the warm windowsill.", "kept everyone awake last night.",
              "broke down in the middle of the cycle.", "needs watering twice a week."]),
}

SENTENCES = [f"{s} {p}" for subjects, predicates in DOMAINS.values() for s in subjects for p in predicates]
assert len(SENTENCES) == 200 and len(set(SENTENCES)) == 200
