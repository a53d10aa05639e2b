-- Fairness between priorities: move the oldest waiting message of each lower priority list up one
-- level, at most once per interval across every worker.
-- KEYS: the aging gate, then the queue's lists from the highest priority to the lowest.
-- ARGV: the interval in milliseconds.
-- kombu pushes on the left and pops on the right, so the right end is the oldest message; it is
-- moved to the right end of the list above, the next message served there. Levels are moved from
-- the top down, so one message climbs one level per interval. Returns the messages moved, or -1
-- when another worker aged the queue within the interval.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return -1 end
local moved = 0
for level = 3, #KEYS do
  if redis.call('LMOVE', KEYS[level], KEYS[level - 1], 'RIGHT', 'RIGHT') then moved = moved + 1 end
end
return moved
