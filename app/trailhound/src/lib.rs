//! The trailhound command: runs any service or all of them, replays trails, generates data, and demos
