-- Prepended to every registry write script. KEYS[1] is the registry lock, ARGV[1] the caller's
-- fencing token ('' for a caller without the lock, allowed only while nobody holds it).
local function fence_error()
  local holder = redis.call('GET', KEYS[1])
  if ARGV[1] == '' then
    if holder then
      return 'INKQ_FENCED the registry lock is held (token ' .. holder .. ') by a train, retrain or rollback'
    end
  elseif holder ~= ARGV[1] then
    return 'INKQ_FENCED this run holds token ' .. ARGV[1] .. ' but the registry lock now holds '
      .. (holder or 'nothing (it expired)')
  end
  return nil
end
local fenced = fence_error()
if fenced then return redis.error_reply(fenced) end
