-- KEYS: lock, current, then (weights, meta) per version to prune.
-- ARGV: token, then (version, meta JSON marked pruned) per version.
-- Never prunes the version "current" points at when the script runs.
local current = redis.call('GET', KEYS[2])
local pruned = 0
for i = 3, #KEYS, 2 do
  local version = ARGV[i - 1]
  if version ~= current then
    redis.call('DEL', KEYS[i])
    redis.call('SET', KEYS[i + 1], ARGV[i])
    pruned = pruned + 1
  end
end
return pruned
