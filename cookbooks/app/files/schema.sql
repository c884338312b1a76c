-- kiln demo shop: schema and seed rows. Safe to load again (IF NOT EXISTS,
-- INSERT IGNORE on fixed ids).
CREATE TABLE IF NOT EXISTS listings (
    id          INT UNSIGNED NOT NULL PRIMARY KEY,
    name        VARCHAR(200) NOT NULL,
    price_cents INT UNSIGNED NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT IGNORE INTO listings (id, name, price_cents) VALUES
    (1, 'Hand-thrown stoneware mug', 2400),
    (2, 'Walnut serving board', 5800),
    (3, 'Linen tea towel, indigo', 1450),
    (4, 'Beeswax taper candles (pair)', 1200),
    (5, 'Enamel camp kettle', 3900);
