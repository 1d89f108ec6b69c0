-- control: queue-wide switches (pause/resume dispatch) and a wake-up for every worker.
-- KEYS[1] control hash
-- ARGV[1] field  ARGV[2] value  ARGV[3] wake channel
-- Returns: the previous value or false
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'c')
return prev
