-- Several nodes sharing the database: which node holds each device's session (`floor`: where
-- its next holder's counter resumes at least), and each node's lease (ms since the epoch).
CREATE TABLE device_holders (
    device_id BIGINT PRIMARY KEY,
    node TEXT,
    floor BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX device_holders_by_node ON device_holders (node);
CREATE TABLE nodes (node TEXT PRIMARY KEY, lease_until BIGINT NOT NULL);
